"""Per-class training masks of magnetic_tile as a long-format RLE CSV (issue 16):

    .venv/bin/python bench/prepare_magnetic_tile.py [--src ../shared/data/magnetic_tile] [--out data/magnetic_tile_5class]

The shared dataset has one binary mask per image and, in `labels.csv`, the image's defect type
(each image has at most one). This writes `OUT/train_rle.csv` in the steel layout
(`ImageId, ClassId, EncodedPixels`, one row per image with a non-empty mask, ClassId the
defect's name without `MT_`), `OUT/classes.txt` and `OUT/README.md`. Images stay in
`--src`: a config points `data.train_images` there. MT_Free images, and the few defect images
whose mask is empty, get no row (empty in every class). `--sample-test N` also links the first N
images (sorted by name) into `OUT/sample_test/`: a small test folder for ablation runs that change
only the ensemble or scorer (`--set data.test_images=data/magnetic_tile_5class/sample_test`), whose
OOF figures do not depend on the test set. Bad input: one line, exit code 2, nothing written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core import fileio
from pipeline.data.imageio import load_mask  # noqa: E402
from pipeline.data.longrle import CLASS_ROWS, RLE  # noqa: E402
from pipeline.data.rle import rle_encode  # noqa: E402

CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
FREE = "MT_Free"


class BadInput(Exception):
    pass


def _rows(src: Path) -> list[tuple[str, str, str]]:
    labels_csv = src / "labels.csv"
    if not labels_csv.is_file():
        raise BadInput(f"{labels_csv}: file missing")
    labels = fileio.read_csv(labels_csv, dtype=str)
    if {"id", "defect_class"} - set(labels.columns):
        raise BadInput(f"{labels_csv}: needs columns id, defect_class; has {', '.join(labels.columns)}")
    known = {f"MT_{c}" for c in CLASSES} | {FREE}
    rows = []
    for line, (item_id, kind) in enumerate(zip(labels["id"], labels["defect_class"], strict=True), start=2):
        if kind not in known:
            raise BadInput(f"{labels_csv}: line {line}: defect_class {kind!r} is not one of {', '.join(sorted(known))}")
        path = src / "masks" / f"{item_id}.png"
        loaded = load_mask(path)
        if loaded.array is None:
            raise BadInput(f"{path}: {loaded.problem or 'unreadable'}")
        if kind == FREE:
            if loaded.array.any():
                raise BadInput(f"{path}: labelled {FREE} in {labels_csv.name} but its mask is not empty")
        elif loaded.array.any():
            rows.append((item_id, kind.removeprefix("MT_"), rle_encode(loaded.array)))
    return rows


def _sample_test(images: Path, out: Path, n: int) -> None:
    """Symbolic links to the first n images of `images` (the data stay where they are)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(images.iterdir())[:n]:
        link = out / path.name
        if not link.exists():
            link.symlink_to(path.resolve())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=Path("../shared/data/magnetic_tile"))
    ap.add_argument("--out", type=Path, default=Path("data/magnetic_tile_5class"))
    ap.add_argument("--sample-test", type=int, default=0, metavar="N", help="link N images into OUT/sample_test")
    args = ap.parse_args(argv)
    try:
        rows = _rows(args.src)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    df = pd.DataFrame(rows, columns=list(CLASS_ROWS.columns))
    args.out.mkdir(parents=True, exist_ok=True)
    fileio.write_text(args.out / "classes.txt", "\n".join(CLASSES) + "\n")
    counts = df["ClassId"].value_counts().reindex(list(CLASSES), fill_value=0)
    readme = (
        f"# magnetic_tile, 5 classes\n\nWritten by `bench/prepare_magnetic_tile.py --src {args.src}`: "
        f"`train_rle.csv` ({CLASS_ROWS.columns[0]}, {CLASS_ROWS.columns[1]}, {RLE}), one row per image with a defect.\n\n"
        + "\n".join(f"- {c}: {n} images" for c, n in counts.items())
        + "\n"
    )
    fileio.write_text(args.out / "README.md", readme)
    if args.sample_test:
        _sample_test(args.src / "images", args.out / "sample_test", args.sample_test)
    fileio.write_csv(args.out / "train_rle.csv", df)  # last: its presence means the rest is there
    print(f"{len(df)} rows -> {args.out / 'train_rle.csv'} ({', '.join(f'{c} {n}' for c, n in counts.items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Peak memory against training-set size: the tgs_salt tiles once, then replicated 4 times.

Budget (issue 19): the 4x run's peak RSS at most 1.2 times the 1x run's. What grows with the
data must stream (memmapped stores, OOF maps written as they are predicted), not sit in lists.

Each side runs `python -m pipeline segment` (ingest, folds, fold 0 of the tgs_salt config) in a
fresh process on a folder of links to the tgs_salt tiles (4x: each tile under 4 ids), with one
epoch on at most `--train` training tiles (the training loop's memory does not depend on the
dataset size; validation, OOF prediction, ingest and the fold tables do, and they run on the
whole fold). Peak RSS is the child's ru_maxrss.

Run: .venv/bin/python bench/memory_scale.py [--data ../shared/data/tgs_salt] [--train 256]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def replicate(src: Path, dst: Path, times: int) -> None:
    """`dst/images`, `dst/masks` and `dst/depths.csv` with every tile of `src` under `times` ids."""
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
    depths = pd.read_csv(src / "depths.csv")
    rows = []
    for path in sorted((src / "images").glob("*.png")):
        for r in range(times):
            new = f"{path.stem}r{r}"
            (dst / "images" / f"{new}.png").symlink_to(path.resolve())
            (dst / "masks" / f"{new}.png").symlink_to((src / "masks" / path.name).resolve())
            rows.append(new)
    z = depths.set_index("id")["z"]
    pd.DataFrame({"id": rows, "z": [z[i[:-2]] for i in rows]}).to_csv(dst / "depths.csv", index=False)


def peak_mb(data: Path, artifacts: Path, train: int) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one child process running the segment stage."""
    sets = [
        f"data.train_images={data / 'images'}",
        f"data.train_masks={data / 'masks'}",
        f"data.metadata=[{data / 'depths.csv'}]",
        f"data.test_images={data / 'images'}",
        f"experiment.artifacts={artifacts}",
        "segment.train.folds=[0]",
        "segment.train.epochs=1",
        "segment.train.swa_epochs=0",
        "segment.train.progressive={crop: 0, until_epoch: 0}",  # its one epoch on whole inputs
        f"segment.train.max_images={train}",
    ]
    cmd = [sys.executable, "-m", "pipeline", "segment", "--config", "configs/tgs_salt.yaml", *[a for s in sets for a in ("--set", s)]]
    # A wrapper process per side: ru_maxrss of children is the maximum over every child waited for.
    wrapper = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=ROOT, check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "tgs_salt"))
    ap.add_argument("--train", type=int, default=256)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for times in (1, 4):
            data = Path(tmp) / f"x{times}"
            replicate(Path(args.data), data, times)
            results[times] = peak_mb(data, Path(tmp) / f"art{times}", args.train)
            print(
                f"{times}x ({times * len(list((Path(args.data) / 'images').glob('*.png')))} tiles): peak {results[times][0]:.0f} MB in {results[times][1]:.0f} s",
                flush=True,
            )
    ratio = results[4][0] / results[1][0]
    print(f"peak memory 4x / 1x: {ratio:.2f} (budget 1.20: {'met' if ratio <= 1.2 else 'NOT met'})")


if __name__ == "__main__":
    main()

"""Ingest of K-class masks: label images, a folder per class, long-format RLE; the packed store
(bit k = class k) and one problem line per file for each new kind of problem."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.fileio import read_csv
from pipeline.core.store import ArrayStore
from pipeline.data import longrle, multiclass
from pipeline.data.ingest import ingest, validate
from pipeline.data.sources import IngestError, Sources

NAMES = ("scratch", "dent", "stain")
IDS = ("a", "b", "c", "d")


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _planes(seed: int, exclusive: bool) -> dict[str, np.ndarray]:
    """(3, 12, 10) 0/1 planes per image: a with all classes, b with one, c with two, d empty."""
    rng = np.random.default_rng(seed)
    out = {}
    for n, i in enumerate(IDS):
        label = rng.integers(0, 4, size=(12, 10)) * (n < 3)
        planes = np.stack([label == k + 1 for k in range(3)]).astype(np.uint8)
        if not exclusive and i != "d":
            planes[2, :3, :3] |= 1  # overlap a class with the others
        for k in {"b": (1, 2), "c": (0,)}.get(i, ()):
            planes[k] = 0
        out[i] = planes
    return out


def _images(root: Path) -> Path:
    for n, i in enumerate(IDS):
        _write(root / "images" / f"{i}.png", np.full((12, 10), 40 * n + 10, np.uint8))
    return root / "images"


def _check_store(out: Path, expected: dict[str, np.ndarray]) -> None:
    masks = ArrayStore(out, "masks")
    for i, planes in expected.items():
        stored = np.asarray(masks.get(i)).reshape(12, 10)
        np.testing.assert_array_equal(stored, multiclass.pack(planes))
        np.testing.assert_array_equal(multiclass.unpack(stored, 3), planes)
    table = read_csv(out / "train.csv")
    assert [f"coverage_{c}" for c in NAMES] == [c for c in table.columns if c.startswith("coverage_")]
    for row in table.itertuples():
        assert row.coverage == pytest.approx((expected[row.id].max(axis=0) > 0).mean())
        assert row.coverage_dent == pytest.approx(expected[row.id][1].mean())
    stats = json.loads((out / "stats.json").read_text())["train"]
    assert stats["empty"] == 1 and stats["classes"]["scratch"]["empty"] == 2


def test_label_images(tmp_path):
    planes = _planes(0, exclusive=True)
    for i, p in planes.items():
        _write(tmp_path / "labels" / f"{i}.png", (p * np.arange(1, 4)[:, None, None]).sum(axis=0).astype(np.uint8))
    src = Sources(_images(tmp_path), train_masks=tmp_path / "labels", classes=NAMES, exclusive=True)
    ingest(src, tmp_path / "out")
    _check_store(tmp_path / "out", planes)


def test_folder_per_class(tmp_path):
    planes = _planes(1, exclusive=False)
    folders = {c: tmp_path / "masks" / c for c in NAMES}
    for i, p in planes.items():
        for k, c in enumerate(NAMES):
            _write(folders[c] / f"{i}.png", p[k] * 255)
    ingest(Sources(_images(tmp_path), train_masks=folders), tmp_path / "out")  # classes from the keys
    _check_store(tmp_path / "out", planes)


@pytest.mark.parametrize("layout", [longrle.CLASS_ROWS, longrle.IMAGE_LABEL])
def test_long_rle(tmp_path, layout):
    planes = _planes(2, exclusive=False)
    rles = {(f"{i}.png", k): r for (i, k), r in longrle.encode(planes).items()}
    csv = tmp_path / "train.csv"
    longrle.to_frame(layout, rles, [f"{i}.png" for i in IDS], multiclass.Classes(NAMES)).to_csv(csv, index=False)
    ingest(Sources(_images(tmp_path), train_rle_csv=csv, classes=NAMES), tmp_path / "out")
    _check_store(tmp_path / "out", planes)


def test_binary_store_unchanged_by_the_class_code(tmp_path):
    """One binary class (no classes given) keeps its 0/1 store and its train.csv columns."""
    _write(tmp_path / "masks" / "a.png", np.pad(np.full((4, 4), 255, np.uint8), ((2, 6), (3, 3))))
    _write(tmp_path / "images" / "a.png", np.full((12, 10), 7, np.uint8))
    ingest(Sources(tmp_path / "images", train_masks=tmp_path / "masks"), tmp_path / "out")
    assert set(np.unique(np.asarray(ArrayStore(tmp_path / "out", "masks").get("a")))) == {0, 1}
    assert list(read_csv(tmp_path / "out" / "train.csv").columns) == ["id", "height", "width", "coverage", "empty"]
    assert "classes" not in json.loads((tmp_path / "out" / "stats.json").read_text())["train"]


def _problems(src: Sources) -> list[str]:
    problems = validate(src)
    with pytest.raises(IngestError):
        ingest(src, src.train_images.parent / "out")
    assert not (src.train_images.parent / "out" / "stats.json").exists()
    return problems


def test_label_value_that_is_no_class(tmp_path):
    for i in IDS:
        _write(tmp_path / "labels" / f"{i}.png", np.full((12, 10), 5 if i == "c" else 1, np.uint8))
    problems = _problems(Sources(_images(tmp_path), train_masks=tmp_path / "labels", classes=NAMES))
    assert problems == ["labels/c.png: pixel value(s) 5 are not class indices 0..3 (3 classes)"]


def test_overlap_in_per_class_folders_of_an_exclusive_task(tmp_path):
    planes = _planes(3, exclusive=True)
    planes["b"][:, 0, 0] = (1, 0, 1)
    folders = {c: tmp_path / "masks" / c for c in NAMES}
    for i, p in planes.items():
        for k, c in enumerate(NAMES):
            _write(folders[c] / f"{i}.png", p[k] * 255)
    problems = _problems(Sources(_images(tmp_path), train_masks=folders, exclusive=True))
    assert problems == ["images/b.png: classes scratch and stain overlap in an exclusive task"]


def test_class_folder_missing_a_mask_and_names_that_differ(tmp_path):
    folders = {c: tmp_path / "masks" / c for c in NAMES}
    for i in IDS:
        for c in NAMES:
            if (i, c) != ("d", "dent"):
                _write(folders[c] / f"{i}.png", np.zeros((12, 10), np.uint8))
    problems = _problems(Sources(_images(tmp_path), train_masks=folders))
    assert problems == ["images/d.png: no mask in masks/dent/"]
    problems = _problems(Sources(_images(tmp_path), train_masks=folders, classes=("scratch", "dent", "rust")))
    assert problems == ["train_masks: folders for scratch, dent, stain; classes are scratch, dent, rust"]


def test_long_rle_problems_reach_the_ingest_report(tmp_path):
    csv = tmp_path / "train.csv"
    pd.DataFrame({"ImageId": ["a", "e"], "ClassId": ["9", "1"], "EncodedPixels": ["1 1", "1 1"]}).to_csv(csv, index=False)
    problems = _problems(Sources(_images(tmp_path), train_rle_csv=csv, classes=NAMES))
    assert problems == [
        "train.csv: line 2: unknown class '9'; classes: scratch, dent, stain",
        "train.csv: line 3: image e has no image file",
    ]


def test_multiclass_demo_labels_csv_and_solution_agree(tmp_path):
    from pipeline.demo import multiclass as demo_multiclass
    from pipeline.evaluation.long_score import score_long

    out = tmp_path / "demo"
    stats = demo_multiclass.generate(out, k=3, n_train=24, n_test=8, size=48)
    assert stats["classes"] == ["stripes", "speckle", "dark"]
    assert demo_multiclass.generate(out, k=3, n_train=24, n_test=8, size=48) == stats  # reused
    names = tuple((out / "classes.txt").read_text().split())
    ingest(Sources(out / "train" / "images", train_masks=out / "train" / "labels", classes=names, exclusive=True), tmp_path / "a")
    ingest(Sources(out / "train" / "images", train_rle_csv=out / "train_rle.csv", classes=names, exclusive=True), tmp_path / "b")
    a, b = ArrayStore(tmp_path / "a", "masks"), ArrayStore(tmp_path / "b", "masks")
    assert all(np.array_equal(a.get(i), b.get(i)) for i in a.ids)
    assert any(len(np.unique(a.get(i))) > 2 for i in a.ids)  # some image holds two classes
    sample = read_csv(out / "sample_submission.csv")
    assert len(sample) == 8 * 3 and list(sample.columns) == ["Image_Label", "EncodedPixels"]
    solution = out / "test_solution" / "solution.csv"
    perfect = score_long(solution, solution, out / "test" / "images", demo_multiclass.Classes(names))
    assert perfect.mean == 1.0 and perfect.images == 8
    blank = score_long(out / "sample_submission.csv", solution, out / "test" / "images", demo_multiclass.Classes(names))
    # an empty submission scores exactly the share of (image, class) pairs that are empty
    sol = read_csv(solution)
    assert blank.mean == pytest.approx((sol["EncodedPixels"].isna() | (sol["EncodedPixels"] == "")).mean())
    assert blank.mean < 1.0


def test_sources_normalise_channels_and_metadata_paths():
    """YAML may give channels as "1" and paths as strings: the binary contract of before."""
    src = Sources(None, test_images="x", channels="1", metadata_csv=["a.csv"])
    assert src.channels == 1 and src.metadata_csv == [Path("a.csv")] and src.multiclass() is None


def test_duplicate_class_names_are_a_problem(tmp_path):
    for i in IDS:
        _write(tmp_path / "labels" / f"{i}.png", np.zeros((12, 10), np.uint8))
    problems = _problems(Sources(_images(tmp_path), train_masks=tmp_path / "labels", classes=("a", "b", "a")))
    assert problems == ["classes: class name(s) a given twice"]

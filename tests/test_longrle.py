"""Long-format RLE CSVs (both Kaggle layouts): round trips and one problem line per bad row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.data import longrle
from pipeline.data.imageio import Report
from pipeline.data.longrle import CLASS_ROWS, IMAGE_LABEL
from pipeline.data.multiclass import Classes
from pipeline.data.rle import rle_encode

CLASSES = Classes(("Fish", "Flower", "Sugar_2"))  # a name with an underscore on purpose
SHAPES = {"a_1": (7, 5), "b": (4, 6), "c": (3, 3)}


def _masks(rng: np.random.Generator, exclusive: bool = False) -> dict[str, np.ndarray]:
    out = {}
    for i, (h, w) in SHAPES.items():
        if exclusive:
            labels = rng.integers(0, 4, size=(h, w))
            out[i] = np.stack([(labels == k + 1) for k in range(3)]).astype(np.uint8)
        else:
            out[i] = (rng.random((3, h, w)) < 0.3).astype(np.uint8)
    out["c"][:] = 0  # an image with no class at all
    out["b"][1] = 0  # and one with an absent class
    return out


def _read(tmp_path, df: pd.DataFrame, classes: Classes = CLASSES, shapes=SHAPES) -> tuple[dict, list[str]]:
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    report = Report([path])
    return longrle.read_masks(report, path, classes, shapes), report.problems


@pytest.mark.parametrize("layout", [CLASS_ROWS, IMAGE_LABEL])
@pytest.mark.parametrize("suffix", ["", ".jpg"])
def test_round_trip_both_layouts(tmp_path, layout, suffix):
    masks = _masks(np.random.default_rng(0))
    rles = {(f"{i}{suffix}", k): r for (i, k), r in longrle.encode(masks).items()}
    df = longrle.to_frame(layout, rles, [f"{i}{suffix}" for i in SHAPES], CLASSES)
    assert len(df) == len(SHAPES) * 3 and list(df.columns) == list(layout.columns)
    back, problems = _read(tmp_path, df)
    assert problems == []
    assert set(back) == set(SHAPES)
    for i in SHAPES:
        np.testing.assert_array_equal(back[i], masks[i])


def test_class_rows_lists_only_present_classes_and_takes_names(tmp_path):
    """The steel layout: absent classes have no row; ClassId by number or by name."""
    masks = _masks(np.random.default_rng(1))
    rows = [(i, str(k + 1) if k != 1 else CLASSES.names[k], rle_encode(m[k])) for i, m in masks.items() for k in range(3) if m[k].any()]
    df = pd.DataFrame(rows, columns=list(CLASS_ROWS.columns))
    back, problems = _read(tmp_path, df)
    assert problems == []
    for i in SHAPES:
        np.testing.assert_array_equal(back[i], masks[i])


def test_detect_layout():
    assert longrle.detect(["ImageId", "ClassId", "EncodedPixels"]) is CLASS_ROWS
    assert longrle.detect(["Image_Label", "EncodedPixels"]) is IMAGE_LABEL
    assert longrle.detect(["id", "rle_mask"]) is None


def test_unknown_class_is_reported_per_line(tmp_path):
    df = pd.DataFrame({"ImageId": ["a_1", "b"], "ClassId": ["4", "Gravel"], "EncodedPixels": ["1 2", "1 1"]})
    _, problems = _read(tmp_path, df)
    assert problems == [
        "train.csv: line 2: unknown class '4'; classes: Fish, Flower, Sugar_2",
        "train.csv: line 3: unknown class 'Gravel'; classes: Fish, Flower, Sugar_2",
    ]
    df = pd.DataFrame({"Image_Label": ["b_Gravel"], "EncodedPixels": [""]})
    _, problems = _read(tmp_path, df, shapes={"b": (4, 6)})
    assert problems[0] == "train.csv: line 2: unknown class 'in b_Gravel'; classes: Fish, Flower, Sugar_2"


def test_missing_class_row_in_the_every_class_layout(tmp_path):
    rows = {"Image_Label": ["b_Fish", "b_Flower", "c_Fish", "c_Flower", "c_Sugar_2"], "EncodedPixels": [""] * 5}
    _, problems = _read(tmp_path, pd.DataFrame(rows), shapes={"b": (4, 6), "c": (3, 3)})
    assert problems == ["train.csv: image b: no row for class(es) Sugar_2"]


def test_overlap_in_an_exclusive_task(tmp_path):
    df = pd.DataFrame({"ImageId": ["b", "b", "c"], "ClassId": ["1", "3", "1"], "EncodedPixels": ["1 5", "4 3", "1 2"]})
    exclusive = Classes(CLASSES.names, exclusive=True)
    _, problems = _read(tmp_path, df, classes=exclusive, shapes={"b": (4, 6), "c": (3, 3)})
    assert problems == ["train.csv: lines 2, 3: image b: classes Fish and Sugar_2 overlap in an exclusive task"]
    # the same rows in a multilabel task (classes may overlap) are fine
    _, problems = _read(tmp_path, df, shapes={"b": (4, 6), "c": (3, 3)})
    assert problems == []


def test_other_row_problems(tmp_path):
    df = pd.DataFrame(
        {
            "ImageId": ["b", "b", "zz.jpg", "c"],
            "ClassId": ["1", "1", "2", "2"],
            "EncodedPixels": ["1 2", "5 1", "1 1", "8 5"],
        }
    )
    masks, problems = _read(tmp_path, df, shapes={"b": (4, 6), "c": (3, 3)})
    assert problems == [
        "train.csv: line 3: image b class Fish repeats line 2",
        "train.csv: line 4: image zz.jpg has no image file",
        "train.csv: line 5: image c class Flower: malformed RLE: out of range: run 1 ends at pixel 12 > 9 (3x3)",
    ]
    assert masks["b"][0].sum() == 2


def test_wrong_columns(tmp_path):
    _, problems = _read(tmp_path, pd.DataFrame({"id": ["b"], "EncodedPixels": [""]}))
    assert problems == ["train.csv: columns id, EncodedPixels: expected ImageId, ClassId, EncodedPixels or Image_Label, EncodedPixels"]


def _prepare_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "prepare_magnetic_tile.py"
    spec = importlib.util.spec_from_file_location("prepare_magnetic_tile", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_magnetic_tile_writes_class_rows_and_refuses_bad_labels(tmp_path, capsys):
    from PIL import Image

    src, out = tmp_path / "src", tmp_path / "out"
    (src / "masks").mkdir(parents=True)
    crack = np.zeros((6, 4), np.uint8)
    crack[2:4, 1] = 255
    for name, mask in {"a": crack, "b": np.zeros((6, 4), np.uint8), "c": np.zeros((5, 5), np.uint8)}.items():
        Image.fromarray(mask).save(src / "masks" / f"{name}.png")
    (src / "labels.csv").write_text("id,defect_class\na,MT_Crack\nb,MT_Free\nc,MT_Fray\n")
    prepare = _prepare_module()
    assert prepare.main(["--src", str(src), "--out", str(out)]) == 0
    df = pd.read_csv(out / "train_rle.csv", dtype=str)
    assert df.values.tolist() == [["a", "Crack", rle_encode(crack)]]  # c: a Fray with an empty mask

    (src / "labels.csv").write_text("id,defect_class\na,MT_Crack\nb,MT_Scratch\n")
    assert prepare.main(["--src", str(src), "--out", str(tmp_path / "out2")]) == 2
    assert "line 3: defect_class 'MT_Scratch' is not one of" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()


def test_score_cli_long_format(tmp_path, capsys):
    """`score --solution`: both layouts, mean Dice over (image, class) pairs with empty-empty = 1."""
    import cv2

    from pipeline.__main__ import main

    images = tmp_path / "images"
    images.mkdir()
    for i, (h, w) in SHAPES.items():
        cv2.imwrite(str(images / f"{i}.png"), np.zeros((h, w), np.uint8))
    truth = _masks(np.random.default_rng(5))
    pred = {i: m.copy() for i, m in truth.items()}
    pred["a_1"][0] = 0  # a_1's first class missed: Dice 0 there, 1 for the other 8 pairs
    solution, sub = tmp_path / "solution.csv", tmp_path / "sub.csv"
    longrle.to_frame(CLASS_ROWS, longrle.encode(truth), list(SHAPES), CLASSES).to_csv(solution, index=False)
    longrle.to_frame(IMAGE_LABEL, longrle.encode(pred), list(SHAPES), CLASSES).to_csv(sub, index=False)
    args = ["score", str(sub), "--solution", str(solution), "--images", str(images), "--classes", ",".join(CLASSES.names)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"dice: {8 / 9:.4f} over 3 images x 3 classes" in out
    assert f"Fish: {2 / 3:.4f}" in out and "Flower: 1.0000" in out
    assert main([*args[:-1], "Fish,Flower"]) == 2  # Sugar_2 rows are then unknown classes
    err = capsys.readouterr().err
    assert "solution.csv: line" in err and "unknown class '3'" in err  # ClassId numbers a class
    assert "sub.csv: line 4: unknown class 'in a_1_Sugar_2'" in err  # an Image_Label suffix never numbers a class


def test_empty_key_cells_and_unreadable_images(tmp_path):
    df = pd.DataFrame({"ImageId": ["", "b", "gone"], "ClassId": ["1", "1", "1"], "EncodedPixels": ["1 1", "1 1", "1 1"]})
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    report = Report([path])
    # "gone" is a training image that did not decode (reported by ingest): its rows are skipped
    longrle.read_masks(report, path, CLASSES, {"b": (4, 6)}, known={"b", "gone"})
    assert report.problems == ["train.csv: line 2: empty image key"]
    _, problems = _read(tmp_path, pd.DataFrame({"Image_Label": ["", "b_Fish"], "EncodedPixels": ["", ""]}), shapes={"b": (4, 6)})
    assert problems[0] == "train.csv: line 2: unknown class 'in '; classes: Fish, Flower, Sugar_2"


def test_class_names_checked():
    assert Classes(("a", "b", "a")).problem() == "class name(s) a given twice"
    assert Classes(("a", " ")).problem() == "an empty class name"
    assert Classes(tuple("abcdefghi")).problem() == "9 classes; at most 8"
    assert Classes(("a", "b")).index("²") is None and Classes(("a", "b")).index("2") == 1

"""Tests for dataset validation, ingest and the memmapped array store."""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.core.fileio import read_csv
from pipeline.core.store import ArrayStore, write_store
from pipeline.data import imagehead, imageio
from pipeline.data.ingest import ingest, validate
from pipeline.data.sources import IngestError, Sources, format_problems
from pipeline.stages import GRAPH

TGS = Path("/work/shared/data/tgs_salt")
TGS_TEST = Path("/work/shared/data/tgs_salt_unlabeled")


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return path


def _noise(shape: tuple[int, ...], seed: int, dtype: type = np.uint8) -> np.ndarray:
    top = 256 if dtype == np.uint8 else 4096
    return np.random.default_rng(seed).integers(0, top, shape).astype(dtype)


def _rect_mask(h: int, w: int, value: int = 255, dtype: type = np.uint8) -> np.ndarray:
    mask = np.zeros((h, w), dtype)
    mask[:4, :8] = value
    return mask


def _csv(path: Path, rows: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _good(root: Path) -> Sources:
    """Five pairs: 8-bit gray, 16-bit, true RGB, another size, RGBA gray."""
    img, msk = root / "images", root / "masks"
    _write(img / "a.png", _noise((16, 16), 0))
    _write(msk / "a.png", _rect_mask(16, 16))
    _write(img / "b.png", _noise((16, 16), 1, np.uint16) + 1000)
    _write(msk / "b.png", _rect_mask(16, 16, 65535, np.uint16))
    _write(img / "c.png", _noise((16, 16, 3), 2))
    _write(msk / "c.png", np.zeros((16, 16), np.uint8))
    _write(img / "d.png", _noise((20, 24), 3))
    _write(msk / "d.png", _rect_mask(20, 24, 1))
    gray = _noise((16, 16), 4)
    rgba = np.dstack([gray, gray, gray, _noise((16, 16), 5)])
    _write(img / "e.png", rgba)
    _write(msk / "e.tif", _rect_mask(16, 16))
    (img / "notes.txt").write_text("unsupported extensions are ignored")
    _write(root / "test" / "t1.png", _noise((16, 16), 6))
    _write(root / "test" / "t2.png", _noise((18, 16), 7))
    _csv(root / "sample_submission.csv", {"id": ["t2", "t1"], "rle_mask": ["", ""]})
    _csv(root / "depths.csv", {"id": list("abcde"), "z": [1, 2, 3, 4, 5]})
    _csv(root / "depths_test.csv", {"id": ["t1", "t2"], "z": [6, 7]})
    return Sources(
        train_images=img,
        train_masks=msk,
        test_images=root / "test",
        sample_submission=root / "sample_submission.csv",
        metadata_csv=[root / "depths.csv", root / "depths_test.csv"],
    )


def test_good_ingest(tmp_path: Path) -> None:
    src = _good(tmp_path / "data")
    assert validate(src) == []
    out = tmp_path / "out"
    stats = ingest(src, out)
    assert stats["channels"] == 3  # c.png has real color
    assert stats["bit_depths"] == {"8": 6, "16": 1}
    assert stats["train"]["count"] == 5 and stats["train"]["empty"] == 1
    assert stats["test"]["count"] == 2
    assert json.loads((out / "stats.json").read_text()) == stats

    images, masks = ArrayStore(out, "images"), ArrayStore(out, "masks")
    assert images.ids == list("abcde") == masks.ids
    assert images.shapes.tolist() == [[16, 16]] * 3 + [[20, 24], [16, 16]]
    assert images.get("d").shape == (20, 24, 3)
    assert masks.get("d").shape == (20, 24, 1)
    b = images.get("b")
    assert b.min() == 0 and b.max() == 255  # 16-bit stretched per image
    bgr = cv2.imread(str(tmp_path / "data/images/c.png"))
    np.testing.assert_array_equal(images.get("c"), bgr[:, :, ::-1])
    for i in range(len(masks)):
        assert set(np.unique(masks[i])) <= {0, 1}

    train = pd.read_csv(out / "train.csv", dtype={"id": str})
    assert list(train.columns) == ["id", "height", "width", "coverage", "empty", "z"]
    cov = dict(zip(train["id"], train["coverage"], strict=True))
    assert cov["a"] == pytest.approx(32 / 256) and cov["b"] == cov["a"]
    assert cov["c"] == 0 and cov["d"] == pytest.approx(32 / 480)
    assert train["z"].tolist() == [1, 2, 3, 4, 5]
    test = pd.read_csv(out / "test.csv", dtype={"id": str})
    assert test["id"].tolist() == ["t2", "t1"] == ArrayStore(out, "test_images").ids
    assert test[["height", "z"]].values.tolist() == [[18, 7], [16, 6]]


def test_auto_channels_gray_and_forced(tmp_path: Path) -> None:
    src = _good(tmp_path / "data")
    color = _noise((16, 16, 3), 2)
    for name in ("images/c.png", "masks/c.png"):
        (tmp_path / "data" / name).unlink()
    src.metadata_csv = []
    assert ingest(src, tmp_path / "gray")["channels"] == 1
    assert ArrayStore(tmp_path / "gray", "images").get("e").shape == (16, 16, 1)
    _write(tmp_path / "data/images/c.png", color)
    _write(tmp_path / "data/masks/c.png", np.zeros((16, 16), np.uint8))
    src.channels = 1
    assert ingest(src, tmp_path / "forced")["channels"] == 1
    assert ArrayStore(tmp_path / "forced", "images").get("c").shape == (16, 16, 1)


def test_each_file_decoded_once(tmp_path: Path, monkeypatch) -> None:
    src = _good(tmp_path / "data")
    calls = []
    real = cv2.imdecode
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *a: calls.append(1) or real(*a))
    assert validate(src) == []
    ingest(src, tmp_path / "out")
    assert len(calls) == 12  # 5 images + 5 masks + 2 test images


def _broken(root: Path) -> tuple[Sources, list[tuple[str, str]]]:
    src = _good(root)
    img, msk = root / "images", root / "masks"
    for item_id in ("zero", "text", "trunc", "cut", "dup", "nometa", "big", "gray3"):
        _write(msk / f"{item_id}.png", _rect_mask(16, 16))
    (img / "zero.png").write_bytes(b"")
    (img / "text.png").write_text("not an image")
    png = cv2.imencode(".png", _noise((16, 16), 8))[1].tobytes()
    (img / "trunc.png").write_bytes(png[: len(png) // 2])
    jpg = cv2.imencode(".jpg", _noise((16, 16), 9))[1].tobytes()
    (img / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    _write(img / "nomask.png", _noise((16, 16), 10))
    _write(msk / "orphan.png", _rect_mask(16, 16))
    _write(img / "big.png", _noise((16, 16), 11))
    _write(msk / "big.png", _rect_mask(16, 20))
    _write(img / "gray3.png", _noise((16, 16), 12))
    values = np.zeros((16, 16), np.uint8)
    values[:2], values[5:7] = 17, 255
    _write(msk / "gray3.png", values)
    _write(img / "dup.png", _noise((16, 16), 13))
    _write(img / "dup.jpg", _noise((16, 16), 13))
    _write(img / "nometa.png", _noise((16, 16), 14))
    ids = [*"abcde", "zero", "text", "trunc", "cut", "dup", "nomask", "big", "gray3"]
    _csv(root / "depths.csv", {"id": ids, "z": range(len(ids))})
    for path in (root / "test").iterdir():
        path.unlink()
    src.sample_submission = None
    expected = [
        ("images/zero.png", "empty file (0 bytes)"),
        ("images/text.png", "cannot decode"),
        ("images/trunc.png", "truncated PNG"),
        ("images/cut.jpg", "truncated JPEG"),
        ("images/nomask.png", "no mask in masks/"),
        ("masks/orphan.png", "mask has no image (orphan)"),
        ("masks/big.png", "size 16x20 differs from image 16x16"),
        ("masks/gray3.png", "non-binary values: e.g. 0, 17, 255"),
        ("images/dup.jpg, images/dup.png", "duplicate id dup"),
        ("images/nometa.png", "missing from metadata"),
        ("test/", "no images"),
    ]
    return src, expected


def _assert_reported(problems: list[str], expected: list[tuple[str, str]]) -> None:
    for name, message in expected:
        hits = [p for p in problems if p.startswith(f"{name}: ") and message in p]
        assert len(hits) == 1, (name, message, problems)
    assert len(problems) == len(expected), problems  # no follow-up noise


def test_broken_dataset_reports_each_problem(tmp_path: Path) -> None:
    src, expected = _broken(tmp_path / "data")
    problems = validate(src)
    _assert_reported(problems, expected)
    out = tmp_path / "out"
    with pytest.raises(IngestError) as info:
        ingest(src, out)
    assert info.value.problems == problems
    assert str(info.value) == "\n".join(problems)
    assert not out.exists()


def test_malformed_rle_csv(tmp_path: Path) -> None:
    src = _good(tmp_path)
    _write(tmp_path / "images/f.png", _noise((16, 16), 15))
    _write(tmp_path / "images/g.png", _noise((16, 16), 16))
    rows = {
        "id": ["a", "b", "c", "d", "e", "e", "g", "ghost"],
        "rle_mask": ["1 3 2", "250 10", "1 5 3 2", "10 2 1 2", "1 2", "1 2", "1 x"] + ["1 1"],
    }
    src.train_masks, src.train_rle_csv = None, _csv(tmp_path / "train.csv", rows)
    src.metadata_csv = []
    expected = [
        ("train.csv", "line 2: id a: malformed RLE: odd number"),
        ("train.csv", "line 3: id b: malformed RLE: out of range"),
        ("train.csv", "line 4: id c: malformed RLE: overlapping"),
        ("train.csv", "line 5: id d: malformed RLE: unsorted"),
        ("train.csv", "duplicate id e (2 rows)"),
        ("train.csv", "line 8: id g: malformed RLE: non-integer"),
        ("train.csv", "line 9: id ghost has no image"),
        ("images/f.png", "no row in train.csv"),
    ]
    _assert_reported(validate(src), expected)
    with pytest.raises(IngestError):
        ingest(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_rle_tokens_past_int64_and_out_of_range(tmp_path: Path) -> None:
    src = _good(tmp_path)
    rows = {
        "id": list("abcde"),
        "rle_mask": ["9223372036854775807 2", "1 99999999999999999999", "0 3", "-5 2", "250 10"],
    }
    src.train_masks, src.train_rle_csv = None, _csv(tmp_path / "train.csv", rows)
    src.metadata_csv = []
    expected = [
        ("train.csv", "line 2: id a: malformed RLE: out of range: run 1 ends at pixel 9223372036854775808 > 256"),
        ("train.csv", "line 3: id b: malformed RLE: out of range: run 1 ends at pixel 99999999999999999999 > 256"),
        ("train.csv", "line 4: id c: malformed RLE: run 1 has start 0 < 1"),
        ("train.csv", "line 5: id d: malformed RLE: run 1 has start -5 < 1"),
        ("train.csv", "line 6: id e: malformed RLE: out of range: run 1 ends at pixel 259 > 256"),
    ]
    _assert_reported(validate(src), expected)
    with pytest.raises(IngestError):
        ingest(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_score_cli_reports_rle_past_int64(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.__main__ import main

    _write(tmp_path / "masks/a.png", _rect_mask(16, 16))
    _write(tmp_path / "masks/b.png", _rect_mask(16, 16))
    sub = _csv(tmp_path / "sub.csv", {"id": ["a", "b"], "rle_mask": ["9223372036854775807 2", "1 99999999999999999999"]})
    assert main(["score", str(sub), "--masks", str(tmp_path / "masks")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: sub.csv: id a: malformed RLE: out of range: run 1 ends at pixel 9223372036854775808 > 256 (16x16)",
        "sub.csv: id b: malformed RLE: out of range: run 1 ends at pixel 99999999999999999999 > 256 (16x16)",
    ]


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny but well-formed PNG (IHDR, IDAT, IEND, valid CRCs) whose header declares
    width x height 8-bit gray pixels; its IDAT holds only a few rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(bytes(4 * (width + 1)))
    return imagehead.PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF:UserWarning")  # Pillow, on the cut TIFF
@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_header_size_without_decoding(ext: str, monkeypatch) -> None:
    raw = cv2.imencode(ext, _noise((7, 9, 3), 0))[1].tobytes()
    monkeypatch.setattr(imageio.cv2, "imdecode", None)  # any decode would fail here
    assert imagehead.header_size(raw) == (9, 7)
    assert imagehead.size_problem(raw, 63) is None
    assert imagehead.size_problem(raw, 62) == "header declares 9x7 (WxH) = 63 pixels, more than data.max_pixels=62"
    assert imagehead.header_size(b"not an image") is None and imagehead.header_size(raw[:20]) is None


def test_huge_declared_size_refused_from_header(tmp_path: Path, monkeypatch) -> None:
    src = _good(tmp_path)
    (tmp_path / "images/huge.png").write_bytes(_png_declaring(40_000, 40_000))
    _write(tmp_path / "masks/huge.png", _rect_mask(16, 16))
    (tmp_path / "test/bomb.png").write_bytes(_png_declaring(40_000, 40_000))
    src.sample_submission, src.metadata_csv = None, []
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda *a: decoded.append(len(a[0])) or real(*a))
    refused = "header declares 40000x40000 (WxH) = 1600000000 pixels, more than data.max_pixels=50000000"
    _assert_reported(validate(src), [("images/huge.png", refused), ("test/bomb.png", refused)])
    assert max(decoded) < 10_000  # neither tiny-file bomb reached the decoder
    with pytest.raises(IngestError):
        ingest(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # ingest_test's path: the test folder alone.
    alone = Sources(train_images=None, test_images=tmp_path / "test", channels=1)
    _assert_reported(validate(alone), [("test/bomb.png", refused)])


def test_max_pixels_is_configurable_and_decoder_errors_are_problems(tmp_path: Path) -> None:
    src = _good(tmp_path)
    src.metadata_csv = []
    src.max_pixels = 255  # every 16x16 image (256 pixels) is now too big
    problems = validate(src)
    assert "images/a.png: header declares 16x16 (WxH) = 256 pixels, more than data.max_pixels=255" in problems
    # Allowed by max_pixels, refused by OpenCV's own limit (cv2.error): a problem line.
    (tmp_path / "test/bomb.png").write_bytes(_png_declaring(40_000, 40_000))
    alone = Sources(train_images=None, test_images=tmp_path / "test", channels=1, max_pixels=2_000_000_000)
    problems = validate(alone)
    assert len(problems) == 1 and problems[0].startswith("test/bomb.png: cannot decode (OpenCV error in "), problems
    assert "\n" not in problems[0]


NA_IDS = ["NA", "null", "nan", "None"]  # pandas' default reader turns each into NaN


def _nan_like_ids(tmp_path: Path, masks: str = "folder") -> Sources:
    img, msk, test = tmp_path / "images", tmp_path / "masks", tmp_path / "test"
    for i, item_id in enumerate(NA_IDS):
        _write(img / f"{item_id}.png", _noise((16, 16), i))
        _write(msk / f"{item_id}.png", _rect_mask(16, 16) * (i % 2))
        _write(test / f"t{item_id}.png", _noise((16, 16), 10 + i))
    _write(test / "NaN.png", _noise((16, 16), 20))
    test_ids = [f"t{i}" for i in NA_IDS] + ["NaN"]
    rle = {"id": NA_IDS, "rle_mask": ["" if i % 2 == 0 else "1 4 17 4" for i in range(4)]}
    return Sources(
        train_images=img,
        train_masks=msk if masks == "folder" else None,
        train_rle_csv=_csv(tmp_path / "train.csv", rle) if masks == "rle" else None,
        test_images=test,
        sample_submission=_csv(tmp_path / "sample_submission.csv", {"id": test_ids[::-1], "rle_mask": [""] * 5}),
        metadata_csv=[_csv(tmp_path / "depths.csv", {"id": NA_IDS + test_ids, "z": range(9)})],
    )


@pytest.mark.parametrize("masks", ["folder", "rle"])
def test_ids_that_read_as_nan(tmp_path: Path, masks: str) -> None:
    src = _nan_like_ids(tmp_path, masks)
    test_ids = [f"t{i}" for i in NA_IDS] + ["NaN"]
    assert validate(src) == []
    out = tmp_path / "out"
    ingest(src, out)
    assert ArrayStore(out, "images").ids == sorted(NA_IDS) == ArrayStore(out, "masks").ids
    assert ArrayStore(out, "test_images").ids == test_ids[::-1]
    train = read_csv(out / "train.csv")
    assert train["id"].tolist() == sorted(NA_IDS)
    assert dict(zip(train["id"], train["z"], strict=True)) == dict(zip(NA_IDS, range(4), strict=True))
    assert train["empty"].tolist() == [i % 2 == 0 for i in map(NA_IDS.index, sorted(NA_IDS))]
    assert read_csv(out / "test.csv")["z"].tolist() == [8, 7, 6, 5, 4]


def test_artifact_readers_keep_nan_like_ids(tmp_path: Path, monkeypatch) -> None:
    from pipeline import api, explore
    from pipeline.inference.ensemble_io import EnsembleOutputs

    out, ens = tmp_path / "out", tmp_path / "ensemble"
    ingest(_nan_like_ids(tmp_path / "data"), out)
    monkeypatch.setattr(api, "artifact", lambda cfg, stage: out)
    table, _ = explore.train_table(None)
    assert table["id"].tolist() == sorted(NA_IDS)
    ens.mkdir()
    _csv(ens / "oof_cls.csv", {"id": NA_IDS, "prob": [0.5] * 4})
    _csv(ens / "test_cls.csv", {"id": ["NaN"], "prob": [0.5]})
    outputs = EnsembleOutputs(ens, out, out)
    assert outputs.oof_ids == NA_IDS and outputs.test_ids == ["NaN"]
    assert outputs.train_meta["id"].tolist() == sorted(NA_IDS)
    assert "NaN" in outputs.test_meta["id"].tolist()


def test_file_names_not_utf8(tmp_path: Path) -> None:
    src = _good(tmp_path)
    src.sample_submission, src.metadata_csv = None, []
    root = os.fsencode(tmp_path)
    for folder, name, array in (
        (b"images", b"\xff.png", _noise((16, 16), 30)),
        (b"masks", b"\xff.png", _rect_mask(16, 16)),
        (b"test", b"\xfe.png", _noise((16, 16), 31)),
    ):
        with open(os.path.join(root, folder, name), "wb") as f:
            f.write(cv2.imencode(".png", array)[1].tobytes())
    bad = "file name is not valid UTF-8"
    expected = [("images/b'\\xff.png'", bad), ("masks/b'\\xff.png'", bad), ("test/b'\\xfe.png'", bad)]
    _assert_reported(validate(src), expected)
    with pytest.raises(IngestError):
        ingest(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_metadata_column_numeric_except_some_entries_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = _good(tmp_path)
    meta = {"id": list("abcde"), "z": [1, 2, "deep", "NA", 5], "w": [1.5, None, 3, 4, 5], "name": list("vwxyz")}
    _csv(tmp_path / "depths.csv", meta)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert validate(src) == []
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2 and all("\n" not in line for line in lines), lines
    z, w = sorted(lines, key=lambda line: "column 'w'" in line)
    assert z.startswith("depths.csv: column 'z' is numeric except 2 entries (first: id c = 'deep')") and "not a numeric feature" in z
    assert w.startswith("depths.csv: column 'w' is numeric except 1 entry left empty (first: id b)")


def test_group_column_with_missing_values_is_refused(tmp_path: Path) -> None:
    from pipeline.core.errors import UserError
    from pipeline.data.metadata import check_group_column

    _csv(tmp_path / "depths.csv", {"id": ["NA", "b", "c"], "z": [1, 2, 3]})
    _csv(tmp_path / "groups.csv", {"id": ["NA", "b", "c"], "site": ["x", None, None]})
    files = [tmp_path / "depths.csv", tmp_path / "groups.csv"]
    train = read_csv(tmp_path / "groups.csv")
    check_group_column(train.iloc[:1], "site", files)  # no missing value: fine
    check_group_column(train, None, files)  # no group column: nothing to check
    with pytest.raises(UserError) as info:
        check_group_column(train, "site", files)
    message = str(info.value)
    assert "\n" not in message and message.startswith(
        f"{tmp_path / 'groups.csv'}: column 'site' (folds.group_column) is empty for 2 ids (first: id b)"
    )


def test_csv_and_folder_problems(tmp_path: Path) -> None:
    src = _good(tmp_path)
    _csv(tmp_path / "depths.csv", {"name": list("abcde"), "z": range(5)})
    _csv(tmp_path / "sample_submission.csv", {"id": ["t1", "t3", "t3"]})
    src.train_masks = tmp_path / "nope"
    expected = [
        ("nope/", "folder missing"),
        ("depths.csv", "no column id"),
        ("sample_submission.csv", "id t3 has no test image"),
        ("sample_submission.csv", "duplicate id t3 (2 rows)"),
        ("test/t2.png", "id not in sample_submission.csv"),
    ]
    _assert_reported(validate(src), expected)


def test_format_problems() -> None:
    lines = [f"images/{i}.png: bad" for i in range(25)]
    text = format_problems(lines)
    assert text.splitlines()[:20] == lines[:20]
    assert text.splitlines()[-1] == "... and 5 more problems"
    assert format_problems(lines[:3]) == "\n".join(lines[:3])


def test_store_roundtrip_and_pickle(tmp_path: Path) -> None:
    items = [
        ("x", np.arange(6, dtype=np.uint8).reshape(2, 3)),
        ("y", np.ones((1, 2, 3), np.uint8)),
    ]
    write_store(tmp_path, "s", iter(items))
    store = ArrayStore(tmp_path, "s")
    assert len(store) == 2 and store.position("y") == 1 and "x" in store
    np.testing.assert_array_equal(store.get("x")[:, :, 0], items[0][1])
    assert store[-1].shape == (1, 2, 3) and not store[0].flags.writeable
    clone = pickle.loads(pickle.dumps(store))
    assert clone._data is None and len(pickle.dumps(store)) < 5000
    np.testing.assert_array_equal(clone.get("y"), items[1][1])
    write_store(tmp_path, "empty", [])
    assert len(ArrayStore(tmp_path, "empty")) == 0
    with pytest.raises(ValueError):
        write_store(tmp_path, "bad", [("z", np.zeros((2, 2), np.uint16))])
    assert not list(tmp_path.glob("bad*"))


@pytest.fixture(scope="module")
def tgs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not TGS.is_dir():
        pytest.skip("tgs_salt not available")
    src = Sources(
        train_images=TGS / "images",
        train_masks=TGS / "masks",
        test_images=TGS_TEST / "images" if TGS_TEST.is_dir() else None,
        metadata_csv=[TGS / "depths.csv"] + ([TGS_TEST / "depths.csv"] if TGS_TEST.is_dir() else []),
    )
    assert validate(src) == []
    out = tmp_path_factory.mktemp("tgs")
    ingest(src, out)
    return out


@pytest.mark.slow
def test_tgs_salt(tgs: Path) -> None:
    stats = json.loads((tgs / "stats.json").read_text())
    assert stats["train"]["count"] == 3200 and stats["channels"] == 1
    assert stats["train"]["empty_share"] == pytest.approx(0.3906, abs=1e-4)
    train = pd.read_csv(tgs / "train.csv", dtype={"id": str})
    assert train["z"].notna().all() and len(train) == 3200
    assert ArrayStore(tgs, "images")[0].shape == (101, 101, 1)


@pytest.mark.slow
def test_tgs_rle_matches_masks(tgs: Path, tmp_path: Path) -> None:
    src = Sources(TGS / "images", train_rle_csv=TGS / "train.csv")
    ingest(src, tmp_path)
    from_rle, from_png = ArrayStore(tmp_path, "masks"), ArrayStore(tgs, "masks")
    assert from_rle.ids == from_png.ids
    for i in range(100):
        np.testing.assert_array_equal(from_rle[i], from_png[i])


def test_max_pixels_is_in_no_stage_key(smoke_cfg) -> None:
    # Valid data ingests the same under any limit: existing artifacts must keep their keys.

    default, other = smoke_cfg(), smoke_cfg("data.max_pixels=1000")
    assert default.data.max_pixels == 50_000_000 and other.data.max_pixels == 1000
    for stage in ("ingest", "ingest_test"):
        assert GRAPH.stage_key(default, stage) == GRAPH.stage_key(other, stage)

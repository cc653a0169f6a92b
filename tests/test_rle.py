"""Tests for pipeline.data.rle: round trip, Kaggle layout, malformed input, real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.data.rle import RLEError, rle_decode, rle_encode, validate_rle

TGS_DIR = Path("/work/shared/data/tgs_salt")


@st.composite
def masks(draw: st.DrawFn) -> np.ndarray:
    shape = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    kind = draw(st.sampled_from(["random", "empty", "full"]))
    if kind == "empty":
        return np.zeros(shape, dtype=bool)
    if kind == "full":
        return np.ones(shape, dtype=bool)
    return draw(arrays(bool, shape))


@given(masks())
def test_round_trip(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    decoded = rle_decode(rle, mask.shape)
    assert decoded.dtype == np.uint8
    assert decoded.shape == mask.shape
    np.testing.assert_array_equal(decoded, mask.astype(np.uint8))
    assert validate_rle(rle, mask.shape) is None
    # Canonical form: re-encoding reproduces the same string.
    assert rle_encode(decoded) == rle


@given(masks())
def test_encode_nonbinary_values_count_as_foreground(mask: np.ndarray) -> None:
    scaled = mask.astype(np.uint8) * 255
    assert rle_encode(scaled) == rle_encode(mask)


def test_known_3x3_column_major() -> None:
    mask = np.array(
        [
            [0, 1, 0],
            [1, 1, 0],
            [0, 0, 1],
        ],
        dtype=np.uint8,
    )
    # Pixels numbered down each column: (1,0)=2, (0,1)=4, (1,1)=5, (2,2)=9.
    assert rle_encode(mask) == "2 1 4 2 9 1"
    np.testing.assert_array_equal(rle_decode("2 1 4 2 9 1", (3, 3)), mask)


def test_single_pixels_follow_column_major_order() -> None:
    below = np.zeros((3, 3), dtype=np.uint8)
    below[1, 0] = 1
    right = np.zeros((3, 3), dtype=np.uint8)
    right[0, 1] = 1
    assert rle_encode(below) == "2 1"
    assert rle_encode(right) == "4 1"  # row-major numbering would give 2


def test_run_wraps_to_next_column() -> None:
    # Pixels 3 and 4 are the bottom of column 0 and the top of column 1.
    expected = np.zeros((3, 3), dtype=np.uint8)
    expected[2, 0] = expected[0, 1] = 1
    np.testing.assert_array_equal(rle_decode("3 2", (3, 3)), expected)


def test_non_square_shape_is_height_width() -> None:
    mask = np.zeros((2, 4), dtype=np.uint8)
    mask[:, 3] = 1  # last column: pixels 7 and 8
    assert rle_encode(mask) == "7 2"
    np.testing.assert_array_equal(rle_decode("7 2", (2, 4)), mask)


def test_full_and_empty() -> None:
    assert rle_encode(np.zeros((101, 101))) == ""
    assert rle_encode(np.ones((101, 101))) == "1 10201"
    assert rle_decode("1 10201", (101, 101)).all()


@pytest.mark.parametrize("missing", ["", "   ", None, float("nan"), np.float64("nan")])
def test_missing_decodes_to_zeros(missing: object) -> None:
    out = rle_decode(missing, (5, 7))  # type: ignore[arg-type]
    assert out.shape == (5, 7)
    assert out.dtype == np.uint8
    assert not out.any()
    assert validate_rle(missing, (5, 7)) is None  # type: ignore[arg-type]


def test_touching_runs_are_accepted() -> None:
    np.testing.assert_array_equal(rle_decode("1 2 3 2", (2, 2)), np.ones((2, 2)))


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 x 3", "non-integer token 'x' at position 3"),
        ("1.5 2", "non-integer token '1.5' at position 1"),
        ("1 2 3 4 5", "odd number of values (5)"),
        ("0 3", "run 1 has start 0 < 1"),
        ("1 2 -4 1", "run 2 has start -4 < 1"),
        ("1 2 5 0", "run 2 has length 0 < 1"),
        ("10200 11", "out of range: run 1 ends at pixel 10210 > 10201 (101x101)"),
        ("1 1 3 1 10202 1", "out of range: run 3 ends at pixel 10202 > 10201"),
        ("1 1 9 2 5 1", "unsorted runs: run 3 starts at 5 before run 2 at 9"),
        ("1 5 4 2", "overlapping runs: run 2 starts at 4 <= end 5 of run 1"),
        ("7 1 7 1", "overlapping runs: run 2 starts at 7 <= end 7 of run 1"),
        # Tokens past int64 (or summing past it) are out of range, not an OverflowError.
        ("9223372036854775807 2", "out of range: run 1 ends at pixel 9223372036854775808 > 10201"),
        ("1 99999999999999999999", "out of range: run 1 ends at pixel 99999999999999999999 > 10201"),
        ("1 1 -99999999999999999999 1", "run 2 has start -99999999999999999999 < 1"),
        ("1 -99999999999999999999", "run 1 has length -99999999999999999999 < 1"),
        ("1 " + "9" * 5000, "out of range: run 1 ends at pixel 1 + 999999999999...(5000 chars) - 1 > 10201"),
    ],
)
def test_malformed(rle: str, message: str) -> None:
    with pytest.raises(RLEError) as info:
        rle_decode(rle, (101, 101))
    assert message in str(info.value)
    err = validate_rle(rle, (101, 101))
    assert err is not None
    assert message in err


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(RLEError, match="expected a string"):
        rle_decode(12.0, (3, 3))


def test_rle_error_is_value_error() -> None:
    assert issubclass(RLEError, ValueError)


@pytest.mark.parametrize("shape", [(0, 3), (3, -1), (3,)])
def test_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        rle_decode("", shape)  # type: ignore[arg-type]


def test_encode_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((2, 2, 2)))


@pytest.mark.skipif(
    not (TGS_DIR / "train.csv").is_file() or not (TGS_DIR / "masks").is_dir(),
    reason="TGS Salt data not available",
)
def test_matches_real_masks() -> None:
    cv2 = pytest.importorskip("cv2")
    pd = pytest.importorskip("pandas")
    rows = pd.read_csv(TGS_DIR / "train.csv").head(50)
    checked = 0
    for img_id, rle in zip(rows["id"], rows["rle_mask"], strict=True):
        path = TGS_DIR / "masks" / f"{img_id}.png"
        if not path.is_file():
            continue
        png = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert png is not None, path
        truth = (png > 0).astype(np.uint8)
        np.testing.assert_array_equal(rle_decode(rle, truth.shape), truth, err_msg=img_id)
        expected = "" if isinstance(rle, float) else rle.strip()
        assert rle_encode(truth) == expected, img_id
        checked += 1
    assert checked > 0, "no mask PNGs matched train.csv ids"

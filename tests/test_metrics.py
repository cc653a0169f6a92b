"""Tests for pipeline.evaluation.metrics against hand-computed values."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from pipeline.evaluation.metrics import (
    METRICS,
    batch_scores,
    dice,
    get_metric,
    iou,
    scores_from_counts,
    tgs_ap,
)

SHAPE = (101, 101)


def _mask(n_pixels: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    """Mask whose first ``n_pixels`` (row-major) are set, so nested masks are easy."""
    m = np.zeros(shape, dtype=bool)
    m.flat[:n_pixels] = True
    return m


EMPTY = _mask(0)


@pytest.mark.parametrize("name", ["tgs", "dice", "iou"])
def test_both_empty_is_one(name: str) -> None:
    assert METRICS[name](EMPTY, EMPTY) == 1.0


def test_empty_truth_one_false_positive_pixel() -> None:
    pred = _mask(1)
    assert tgs_ap(EMPTY, pred) == 0.0
    assert iou(EMPTY, pred) == 0.0
    assert dice(EMPTY, pred) == 0.0


def test_nonempty_truth_empty_pred() -> None:
    truth = _mask(30)
    assert tgs_ap(truth, EMPTY) == 0.0
    assert iou(truth, EMPTY) == 0.0
    assert dice(truth, EMPTY) == 0.0


@pytest.mark.parametrize("name", ["tgs", "dice", "iou"])
def test_perfect_match(name: str) -> None:
    truth = _mask(500)
    assert METRICS[name](truth, truth.copy()) == 1.0


def test_iou_exactly_0_6() -> None:
    truth, pred = _mask(10), _mask(6)  # pred inside truth: IoU 6/10
    assert iou(truth, pred) == pytest.approx(0.6)
    # IoU > t for t = 0.50, 0.55 only; 0.6 > 0.6 is false.
    assert tgs_ap(truth, pred) == pytest.approx(0.2)
    assert dice(truth, pred) == pytest.approx(2 * 6 / 16)  # 0.75


def test_iou_exactly_0_75() -> None:
    truth, pred = _mask(4), _mask(3)
    assert iou(truth, pred) == pytest.approx(0.75)
    # Passes 0.50, 0.55, 0.60, 0.65, 0.70; not 0.75.
    assert tgs_ap(truth, pred) == pytest.approx(0.5)
    assert dice(truth, pred) == pytest.approx(6 / 7)


@pytest.mark.parametrize(
    ("k", "expected"),
    # IoU = k/20 hits every threshold exactly; AP counts thresholds strictly below.
    [(9, 0.0), (10, 0.0), (11, 0.1), (12, 0.2), (13, 0.3), (14, 0.4), (15, 0.5),
     (16, 0.6), (17, 0.7), (18, 0.8), (19, 0.9), (20, 1.0)],
)  # fmt: skip
def test_tgs_at_every_threshold_boundary(k: int, expected: float) -> None:
    assert tgs_ap(_mask(20), _mask(k)) == pytest.approx(expected)


def test_partial_overlap_dice_and_iou() -> None:
    # truth = columns 0-3 of row 0, pred = columns 2-5: inter 2, union 6.
    truth = np.zeros((3, 8), dtype=bool)
    pred = np.zeros((3, 8), dtype=bool)
    truth[0, 0:4] = True
    pred[0, 2:6] = True
    assert iou(truth, pred) == pytest.approx(2 / 6)
    assert dice(truth, pred) == pytest.approx(2 * 2 / 8)
    assert tgs_ap(truth, pred) == 0.0  # IoU 0.33 < 0.5


def test_disjoint_masks() -> None:
    truth = np.zeros((4, 4), dtype=bool)
    pred = np.zeros((4, 4), dtype=bool)
    truth[0, 0] = pred[3, 3] = True
    assert iou(truth, pred) == dice(truth, pred) == tgs_ap(truth, pred) == 0.0


def test_accepts_uint8_masks() -> None:
    truth = _mask(10).astype(np.uint8) * 255
    pred = _mask(6).astype(np.uint8)
    assert tgs_ap(truth, pred) == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["tgs", "dice", "iou"])
def test_batch_matches_per_image_loop(name: str) -> None:
    rng = np.random.default_rng(0)
    n = 200
    density = rng.uniform(0, 1, size=(n, 1, 1))
    truths = rng.random((n, 13, 11)) < density
    # Mostly-agreeing predictions so TGS covers many thresholds, not just 0.
    flips = rng.random((n, 13, 11)) < rng.uniform(0, 0.3, size=(n, 1, 1))
    preds = truths ^ flips
    truths[:5] = False  # empty truths, including both-empty
    preds[:3] = False
    preds[5:8] = False  # non-empty truth, empty pred
    got = batch_scores(truths, preds, name)
    want = np.array([METRICS[name](t, p) for t, p in zip(truths, preds, strict=True)])
    assert got.shape == (n,)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    if name == "tgs":
        assert len(np.unique(got)) > 3


def test_scores_from_counts_hand_values() -> None:
    inter = np.array([0, 0, 6, 3, 5])
    truth_area = np.array([0, 0, 10, 4, 5])
    pred_area = np.array([0, 1, 6, 3, 5])
    np.testing.assert_allclose(scores_from_counts(inter, truth_area, pred_area, "tgs"), [1, 0, 0.2, 0.5, 1])
    np.testing.assert_allclose(scores_from_counts(inter, truth_area, pred_area, "iou"), [1, 0, 0.6, 0.75, 1])
    np.testing.assert_allclose(scores_from_counts(inter, truth_area, pred_area, "dice"), [1, 0, 0.75, 6 / 7, 1])


def test_scores_from_counts_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="intersection"):
        scores_from_counts(np.array([5]), np.array([4]), np.array([5]), "iou")
    with pytest.raises(ValueError, match="equal shape"):
        scores_from_counts(np.array([1, 2]), np.array([4]), np.array([5]), "iou")


def test_batch_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        batch_scores(np.zeros((2, 3, 3), bool), np.zeros((2, 3, 4), bool), "iou")


def test_get_metric() -> None:
    assert get_metric("tgs") is tgs_ap
    assert get_metric("dice") is dice
    assert get_metric("iou") is iou


@pytest.mark.parametrize(
    "call",
    [
        lambda: get_metric("f1"),
        lambda: batch_scores(np.zeros((1, 2, 2), bool), np.zeros((1, 2, 2), bool), "f1"),
        lambda: scores_from_counts(np.array([0]), np.array([0]), np.array([0]), "f1"),
    ],
)
def test_unknown_metric_lists_valid_names(call: Callable[[], object]) -> None:
    with pytest.raises(KeyError) as info:
        call()
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    assert "'f1'" in msg
    for name in ("dice", "iou", "tgs"):
        assert name in msg

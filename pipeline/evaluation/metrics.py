"""Segmentation metrics on binary masks.

Every formula lives in one place, :func:`scores_from_counts`, which works on
per-image intersection/area counts. Single-image and batch functions only
count pixels and delegate, so threshold searches over thousands of images and
one-off evaluations can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "METRICS",
    "TGS_THRESHOLDS",
    "UnknownMetricError",
    "batch_scores",
    "dice",
    "get_metric",
    "iou",
    "scores_from_counts",
    "tgs_ap",
]

# Thresholds kept as integer percentages so that "IoU > t" is decided exactly
# (100 * inter > t * union); with float thresholds IoU 0.6 vs t 0.6 would
# depend on rounding in np.arange.
_TGS_THRESHOLDS_PCT = np.arange(50, 100, 5, dtype=np.int64)
TGS_THRESHOLDS: np.ndarray = _TGS_THRESHOLDS_PCT / 100.0


class UnknownMetricError(KeyError, ValueError):
    """Unknown metric name: a KeyError for lookups, a ValueError for config checks."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and add quotes.
        return str(self.args[0]) if self.args else ""


def _iou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    empty = union == 0
    return np.where(empty, 1.0, inter / np.where(empty, 1, union))


def _iou(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> np.ndarray:
    return _iou_from_counts(inter, ta + pa - inter)


def _dice(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> np.ndarray:
    total = ta + pa
    empty = total == 0
    return np.where(empty, 1.0, 2.0 * inter / np.where(empty, 1, total))


def _tgs(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> np.ndarray:
    # With the whole mask as one object, precision at threshold t is 1 when
    # IoU > t and 0 otherwise (a miss counts as FN or FP). Empty-vs-empty has
    # no objects at all and Kaggle scored it 1; that falls out of union == 0.
    union = ta + pa - inter
    hits = 100 * inter[:, None] > _TGS_THRESHOLDS_PCT[None, :] * union[:, None]
    return np.where(union == 0, 1.0, hits.mean(axis=1))


_FORMULAS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "tgs": _tgs,
    "dice": _dice,
    "iou": _iou,
}


def _unknown(name: object) -> UnknownMetricError:
    valid = ", ".join(sorted(_FORMULAS))
    return UnknownMetricError(f"unknown metric {name!r}; valid names: {valid}")


def scores_from_counts(inter: np.ndarray, truth_area: np.ndarray, pred_area: np.ndarray, metric: str) -> np.ndarray:
    """Per-image metric values (float64) from intersection and area pixel counts.

    Inputs are 1-D arrays (or scalars) of equal shape; images may have
    different sizes since only counts are needed.
    """
    formula = _FORMULAS.get(metric)
    if formula is None:
        raise _unknown(metric)
    inter, ta, pa = (np.atleast_1d(np.asarray(a)) for a in (inter, truth_area, pred_area))
    if not (inter.shape == ta.shape == pa.shape) or inter.ndim != 1:
        raise ValueError(f"counts must be 1-D arrays of equal shape, got {inter.shape}, {ta.shape}, {pa.shape}")
    # int64 keeps the TGS threshold comparison exact; floats (e.g. soft counts)
    # pass through unchanged.
    if all(np.issubdtype(a.dtype, np.integer) or a.dtype == bool for a in (inter, ta, pa)):
        inter, ta, pa = (a.astype(np.int64, copy=False) for a in (inter, ta, pa))
    if (inter < 0).any() or (inter > np.minimum(ta, pa)).any():
        raise ValueError("need 0 <= intersection <= min(truth_area, pred_area)")
    return formula(inter, ta, pa).astype(np.float64, copy=False)


def pixel_counts(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image intersection, truth area and predicted area (nonzero = foreground; any sizes):
    the one place pixels are counted for every metric and post-processing score."""
    inter = np.array([np.count_nonzero(np.logical_and(t, p)) for t, p in zip(truths, preds, strict=True)], dtype=np.int64)
    ta = np.array([np.count_nonzero(t) for t in truths], dtype=np.int64)
    pa = np.array([np.count_nonzero(p) for p in preds], dtype=np.int64)
    return inter, ta, pa


def batch_scores(truths: np.ndarray, preds: np.ndarray, metric: str) -> np.ndarray:
    """Per-image metric for stacks of masks shaped (N, H, W); nonzero = foreground."""
    truths, preds = np.asarray(truths), np.asarray(preds)
    if truths.shape != preds.shape or truths.ndim != 3:
        raise ValueError(f"truths and preds must share an (N, H, W) shape, got {truths.shape} and {preds.shape}")
    if metric not in _FORMULAS:
        # Fail before counting pixels over a large batch.
        raise _unknown(metric)
    return scores_from_counts(*pixel_counts(truths, preds), metric)


def _single(truth: np.ndarray, pred: np.ndarray, metric: str) -> float:
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"shape mismatch: truth {truth.shape} vs pred {pred.shape}")
    return float(scores_from_counts(*pixel_counts(truth[None], pred[None]), metric)[0])


def tgs_ap(truth: np.ndarray, pred: np.ndarray) -> float:
    """TGS Salt score of one image: mean over t in 0.50:0.05:0.95 of (IoU > t).

    Empty truth and empty pred score 1; any miss against an empty side scores 0.
    """
    return _single(truth, pred, "tgs")


def dice(truth: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient 2|T∩P| / (|T| + |P|); 1 when both masks are empty."""
    return _single(truth, pred, "dice")


def iou(truth: np.ndarray, pred: np.ndarray) -> float:
    """Intersection over union; 1 when both masks are empty."""
    return _single(truth, pred, "iou")


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "tgs": tgs_ap,
    "dice": dice,
    "iou": iou,
}


def get_metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Single-image metric by name; raises UnknownMetricError listing valid names."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None

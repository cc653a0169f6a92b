"""Post-processing and gating: the single place that turns probabilities into masks, used
by the scorer (to score candidates), the submission and notebooks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.core import progress
from pipeline.evaluation.metrics import pixel_counts, scores_from_counts


def gate_masks(cls_probs: np.ndarray, gate: float, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Empty the masks of images whose classifier probability is below `gate` (NaN: no classifier, never gates)."""
    return [m if np.isnan(p) or p >= gate else np.zeros_like(m) for p, m in zip(cls_probs, masks, strict=True)]


def apply(prob: np.ndarray, cls_prob: float, threshold: float, min_area: int, gate: float) -> np.ndarray:
    """One image: pixel threshold, then empty the mask if its area < min_area or the
    classifier says empty (cls_prob < gate). NaN cls_prob (no classifier) never gates."""
    mask = prob > threshold
    if (not np.isnan(cls_prob) and cls_prob < gate) or mask.sum() < min_area:
        return np.zeros_like(mask)
    return mask


def candidate_scores(
    truths: Sequence[np.ndarray],
    probs: Sequence[np.ndarray],
    cls_probs: np.ndarray,
    thresholds: Sequence[float],
    min_areas: Sequence[int],
    gates: Sequence[float],
    metric: str = "tgs",
) -> tuple[np.ndarray, np.ndarray]:
    """True per-image metric for every candidate (threshold, min_area, gate).

    Returns (candidates (C, 3), scores (N, C)). Min area and gate only ever empty a mask,
    so counts are computed once per threshold and the rest is vectorised."""
    truth_bool = [t > 0 for t in truths]
    cls = np.nan_to_num(np.asarray(cls_probs, dtype=float), nan=1.0)
    cands, cols = [], []
    for t in progress.bar(thresholds, "candidates", unit="threshold"):
        inter, ta, pa = pixel_counts(truth_bool, [p > t for p in probs])
        for a in min_areas:
            for g in gates:
                keep = (pa >= a) & (cls >= g)
                cols.append(scores_from_counts(np.where(keep, inter, 0), ta, np.where(keep, pa, 0), metric))
                cands.append((t, a, g))
    return np.array(cands, dtype=float), np.stack(cols, axis=1)

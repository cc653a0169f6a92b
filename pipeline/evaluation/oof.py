"""Scoring probability maps of varying sizes against masks, and loading OOF artifacts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.evaluation.metrics import pixel_counts, scores_from_counts


def paired(diff: np.ndarray) -> tuple[float, float]:
    """Mean of per-image differences of two settings on the same images, and its standard error."""
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def score_probs(truths: Sequence[np.ndarray], probs: Sequence[np.ndarray], threshold: float = 0.5, metric: str = "tgs") -> np.ndarray:
    """Per-image metric of thresholded probability maps against boolean truths."""
    preds = [p > threshold for p in probs]
    return scores_from_counts(*pixel_counts([t > 0 for t in truths], preds), metric)

"""Scoring probability maps of varying sizes against masks, and loading OOF artifacts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.metrics import scores_from_counts


def counts(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image intersection, truth area and predicted area (any sizes)."""
    inter = np.array([np.count_nonzero(t & p) for t, p in zip(truths, preds, strict=True)], dtype=np.int64)
    ta = np.array([np.count_nonzero(t) for t in truths], dtype=np.int64)
    pa = np.array([np.count_nonzero(p) for p in preds], dtype=np.int64)
    return inter, ta, pa


def score_probs(truths: Sequence[np.ndarray], probs: Sequence[np.ndarray], threshold: float = 0.5, metric: str = "tgs") -> np.ndarray:
    """Per-image metric of thresholded probability maps against boolean truths."""
    preds = [p > threshold for p in probs]
    return scores_from_counts(*counts([t > 0 for t in truths], preds), metric)

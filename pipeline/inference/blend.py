"""Blending several models' probability maps with weights fitted on OOF maps, under nested
CV: the weights that blend fold k's OOF maps are fitted on the other folds only, so neither
the reported blend score nor the blended OOF maps that the scorer reads were chosen on the
labels they are scored against. The test maps use weights fitted on every fold."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.oof import score_probs


def blend(maps: list[list[np.ndarray]], weights: np.ndarray) -> list[np.ndarray]:
    """Weighted sum, image by image, of several models' maps."""
    return [sum(w * m[i] for w, m in zip(weights, maps, strict=True)) for i in range(len(maps[0]))]


def simplex_grid(n: int, step: float = 0.1) -> list[np.ndarray]:
    """Every weight vector on the simplex with entries on a grid of `step`."""
    if n == 1:
        return [np.ones(1)]
    grid = np.round(np.arange(0, 1 + 1e-9, step), 6)
    return [np.array(c) for c in itertools.product(grid, repeat=n) if abs(sum(c) - 1) < 1e-6]


def fit_weights(oofs: list[list[np.ndarray]], truths: list[np.ndarray], step: float = 0.1) -> tuple[np.ndarray, float]:
    """Blend weights on the simplex (grid of `step`) maximising mean mAP at 0.5 on the given
    maps; a tie keeps the first in grid order."""
    best_w, best = np.full(len(oofs), 1.0 / len(oofs)), -1.0
    for w in simplex_grid(len(oofs), step):
        score = float(score_probs(truths, blend(oofs, w)).mean())
        if score > best + 1e-9:
            best_w, best = w, score
    return best_w, best


def test_weights(oofs: list[list[np.ndarray]], truths: list[np.ndarray], fit: bool = True) -> np.ndarray:
    """The test set's blend weights: fitted on all OOF maps (`fit`, two models or more), else uniform."""
    n = len(oofs)
    return fit_weights(oofs, truths)[0] if fit and n > 1 else np.full(n, 1.0 / n)


@dataclass
class NestedBlend:
    """Fold-wise weights, the blended OOF maps (fold k blended with fold k's weights), their
    per-image scores, and the weights fitted on all folds for the test set."""

    fold_weights: dict[int, np.ndarray]
    oof: list[np.ndarray]
    scores: np.ndarray
    test_weights: np.ndarray


def nested_blend(oofs: list[list[np.ndarray]], truths: list[np.ndarray], fold: np.ndarray, fit: bool = True) -> NestedBlend:
    """Blend weights for fold k fitted on the other folds' OOF maps, for each k. With `fit`
    off, or fewer than two folds to nest over, the weights are uniform."""
    n, fold = len(oofs), np.asarray(fold)
    uniform = np.full(n, 1.0 / n)
    folds = np.unique(fold)
    nest = fit and n > 1 and len(folds) > 1
    weights: dict[int, np.ndarray] = {}
    out: list[np.ndarray | None] = [None] * len(truths)
    for k in folds:
        rows = np.flatnonzero(fold == k)
        fit_rows = np.flatnonzero(fold != k)
        if nest:
            weights[int(k)], _ = fit_weights([[m[i] for i in fit_rows] for m in oofs], [truths[i] for i in fit_rows])
        else:
            weights[int(k)] = uniform
        # One model's OOF maps are its own blend: the maps themselves, not a float64 copy of the
        # same values (twice their memory; K classes of large images: gigabytes).
        part = [[m[i] for i in rows] for m in oofs]
        for i, b in zip(rows, part[0] if n == 1 else blend(part, weights[int(k)]), strict=True):
            out[i] = b
    return NestedBlend(weights, out, score_probs(truths, out), test_weights(oofs, truths, fit))

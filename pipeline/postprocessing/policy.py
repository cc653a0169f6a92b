"""Applying a fitted post-processing policy: the LB-score predictor's design matrix
(image features x candidates), its predictions and each policy's choice of candidate per image.
The scorer stage fits and evaluates policies (pipeline/postprocessing/score_predictor.py); the scorer, the submission
and the offline bundle apply them through this module."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.errors import UserError

NO_RAW = "scorer.policy: none needs threshold 0.5, min area 0 and gate 0 among the candidates"


def design(features: pd.DataFrame, cands: np.ndarray) -> pd.DataFrame:
    """Rows: image x candidate; columns: image features + candidate parameters."""
    n, c = len(features), len(cands)
    x = features.loc[features.index.repeat(c)].reset_index(drop=True)
    x["cand_threshold"], x["cand_min_area"], x["cand_gate"] = (np.tile(cands[:, j], n) for j in range(3))
    x["cand_gated"] = (x["cls_prob"].fillna(1.0) < x["cand_gate"]).astype(float)
    return x


def predicted(model, features: pd.DataFrame, cands: np.ndarray) -> np.ndarray:
    """Predicted metric (N, C) of every image under every candidate; `model`: a fitted
    LGBMRegressor or a Booster loaded from its text file (both have `predict`)."""
    return model.predict(design(features, cands)).reshape(len(features), len(cands))


def choose(
    policy: str,
    n_images: int,
    pred: np.ndarray | None,
    fit_scores: np.ndarray,
    raw: int | None = None,
    classes: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Candidate index per row (an image, or an (image, class) pair) under a policy; `raw` is
    the no-post-processing candidate (policy none); `pred` (LightGBM's predicted scores) is
    needed by global and per_image. With `classes` = (class of each chosen-for row, class of
    each `fit_scores` row), grid and global choose one candidate per class."""
    if classes is not None:
        rows, fit = classes
        out = np.zeros(n_images, dtype=int)
        for c in np.unique(rows):
            at = rows == c
            part = None if pred is None else pred[at]
            out[at] = choose(policy, int(at.sum()), part, fit_scores[fit == c], raw)
        return out
    if policy == "none":
        if raw is None:
            raise UserError(NO_RAW)
        return np.full(n_images, raw)
    if policy == "grid":
        return np.full(n_images, int(np.argmax(fit_scores.mean(axis=0))))
    if policy == "global":
        return np.full(n_images, int(np.argmax(pred.mean(axis=0))))
    if policy == "difficulty":
        return by_difficulty(pred, fit_scores)
    return np.argmax(pred, axis=1)


# Easy / medium / hard: each difficulty group's grid candidate (policy `difficulty`).
DIFFICULTY_GROUPS = 3
# A group with fewer fit rows keeps the overall grid candidate: a mean over a handful of images
# would pick noise.
MIN_GROUP_ROWS = 20


def difficulty_groups(fit_scores: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group (0 = hardest) of each fit row by its true score and of each row to choose for by its
    *predicted* score, both under the grid's candidate. The fit rows split at their tertiles;
    the others in the same proportions by the rank of their prediction (predictions shrink
    towards the mean, so the true scores' edges would put nearly every image in the middle)."""
    best = int(np.argmax(fit_scores.mean(axis=0)))
    edges = np.quantile(fit_scores[:, best], np.linspace(0, 1, DIFFICULTY_GROUPS + 1)[1:-1])
    fit_group = np.searchsorted(edges, fit_scores[:, best], side="right")
    shares = np.cumsum(np.bincount(fit_group, minlength=DIFFICULTY_GROUPS))[:-1] / len(fit_group)
    # By rank, ties broken by position: LightGBM's predictions are piecewise constant, and tied
    # rows at a quantile would all move up one group.
    rank = np.empty(len(pred), dtype=int)
    rank[np.argsort(pred[:, best], kind="stable")] = np.arange(len(pred))
    return fit_group, np.searchsorted(np.round(shares * len(pred)), rank, side="right")


def by_difficulty(pred: np.ndarray, fit_scores: np.ndarray) -> np.ndarray:
    """Candidate per row: the grid candidate of its difficulty group (difficulty_groups)."""
    overall = int(np.argmax(fit_scores.mean(axis=0)))
    fit_group, group = difficulty_groups(fit_scores, pred)
    out = np.full(len(pred), overall)
    for g in np.unique(group):
        at = fit_group == g
        if at.sum() >= MIN_GROUP_ROWS:
            out[group == g] = int(np.argmax(fit_scores[at].mean(axis=0)))
    return out


def candidate_grid(thresholds, min_areas, gates) -> np.ndarray:
    """The candidates (C, 3) in the order the scorer scores them: threshold, then min area, then gate."""
    return np.array([(t, a, g) for t in thresholds for a in min_areas for g in gates], dtype=float)

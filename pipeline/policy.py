"""Applying a fitted post-processing policy: the LB-score predictor's design matrix
(image features x candidates), its predictions and each policy's choice of candidate per image.
The scorer stage fits and evaluates policies (pipeline/scoring.py); the scorer, the submission
and the offline bundle apply them through this module."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import UserError

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
    return np.argmax(pred, axis=1)


def candidate_grid(thresholds, min_areas, gates) -> np.ndarray:
    """The candidates (C, 3) in the order the scorer scores them: threshold, then min area, then gate."""
    return np.array([(t, a, g) for t in thresholds for a in min_areas for g in gates], dtype=float)

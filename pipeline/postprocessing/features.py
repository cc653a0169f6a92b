"""Per-image features for the LB-score predictor, computed the same way for OOF and test."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd

from pipeline.core import progress
from pipeline.data import classrows

AREA_THRESHOLDS = (0.3, 0.5, 0.7)


def _components(mask: np.ndarray) -> tuple[int, float]:
    """Number of connected components and the largest one's share of the image."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return 0, 0.0
    return n - 1, float(stats[1:, cv2.CC_STAT_AREA].max()) / mask.size


def image_features(prob: np.ndarray, dist: np.ndarray | None, image: np.ndarray) -> dict[str, float]:
    """Statistics of one probability map (and distance map and image)."""
    f = {
        "p_mean": float(prob.mean()),
        "p_max": float(prob.max()),
        "p_std": float(prob.std()),
        "p_q90": float(np.quantile(prob, 0.9)),
        "uncertain": float(np.mean((prob > 0.2) & (prob < 0.8))),
        "img_mean": float(image.mean()),
        "img_std": float(image.std()),
        "size": float(prob.size),
    }
    for t in AREA_THRESHOLDS:
        f[f"area_{t}"] = float(np.mean(prob > t))
    f["n_comp"], f["largest_comp"] = _components(prob > 0.5)
    if dist is not None:
        f["d_mean"], f["d_max"] = float(dist.mean()), float(dist.max())
        inside = prob > 0.5
        f["d_in_mean"] = float(dist[inside].mean()) if inside.any() else 0.0
    return f


def feature_table(
    ids: list[str],
    probs: list[np.ndarray],
    dists: list[np.ndarray] | None,
    images,
    cls_probs: np.ndarray,
    meta: pd.DataFrame | None,
    classes: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per image (per (image, class) pair for K `classes`, keyed `<id>_<class>`, with
    the class index as a feature): map statistics, classifier probability (`cls_probs`, one per
    row: NaN without a classifier), numeric metadata."""
    k = max(len(classes), 1)
    image_of = classrows.repeat(ids, k)
    prob_rows, dist_rows = classrows.flat(probs), None if dists is None else classrows.flat(dists)
    rows = [
        image_features(p, None if dist_rows is None else dist_rows[r], images.get(image_of[r]))
        for r, p in progress.bar(enumerate(prob_rows), "map features", len(prob_rows), unit="row")
    ]
    table = pd.DataFrame(rows, index=pd.Index(classrows.keys(ids, classes), name="id"))
    if k > 1:
        table["class"] = classrows.class_of_row(len(ids), k)
    table["cls_prob"] = np.asarray(cls_probs, dtype=float)  # one per row
    if meta is not None:
        per_row = meta_features(meta, classes).reindex(image_of).set_axis(table.index)
        table = table.join(per_row, how="left")
    return table


def meta_features(meta: pd.DataFrame, classes: Sequence[str] = ()) -> pd.DataFrame:
    """The scorer's features from an ingest table (by id): its numeric metadata columns, prefixed."""
    numeric = meta.set_index("id").select_dtypes("number")
    # The labels' own statistics (coverage, each class's coverage_<class>, empty) are answers, never features.
    answers = ["height", "width", "coverage", "empty", *(f"coverage_{c}" for c in classes)]
    numeric = numeric.drop(columns=answers, errors="ignore")
    return numeric.add_prefix("meta_")

"""Fold assignment: StratifiedKFold on coverage bins (empty masks are their own bin) or on each
image's combination of classes, or StratifiedGroupKFold when groups are given (a metadata
column, or mosaic groups)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline.core.errors import UserError


def coverage_bins(coverage: np.ndarray, n_bins: int) -> np.ndarray:
    """0 for empty masks, then 1..n_bins by equal-width coverage."""
    cov = np.asarray(coverage, dtype=float)
    bins = 1 + np.minimum((cov * n_bins).astype(int), n_bins - 1)
    return np.where(cov > 0, bins, 0)


def class_strata(presence: np.ndarray, n_folds: int) -> np.ndarray:
    """Stratum per image from its combination of present classes ((n, K) bool): 0 for none,
    else the combination's bit code. A combination held by fewer than n_folds images joins
    the stratum of its rarest class alone (or, when that is small too, the most common one),
    so each fold still gets its share of every class.

    Why not iterative stratification (Sechidis et al., the iterative-stratification package):
    it has no groups, and the folds must keep mosaic groups, clusters and group_column
    together; sklearn's StratifiedGroupKFold on the combination does both."""
    presence = np.asarray(presence, dtype=bool)
    codes = presence.astype(np.int64) @ (1 << np.arange(presence.shape[1], dtype=np.int64))
    values, counts = np.unique(codes, return_counts=True)
    size = dict(zip(values.tolist(), counts.tolist(), strict=True))
    per_class = presence.sum(axis=0)
    out = codes.copy()
    for code, n in size.items():
        if code == 0 or n >= n_folds:
            continue
        present = [c for c in range(presence.shape[1]) if code >> c & 1]
        alone = 1 << min(present, key=lambda c: per_class[c])
        common = max((c for c in size if c != 0), key=lambda c: size[c])
        out[codes == code] = alone if size.get(alone, 0) >= n_folds else common
    return out


def make_folds(train: pd.DataFrame, n_folds: int, strata: np.ndarray, seed: int, group_column: str | None) -> np.ndarray:
    """Fold index per row of `train` (needs the group column when one is named), stratified by
    `strata` (coverage_strata or class_strata)."""
    folds = np.full(len(train), -1, dtype=int)
    if group_column:
        if group_column not in train.columns:
            raise UserError(f"folds.group_column: column {group_column!r} not in the train metadata (columns: {', '.join(train.columns)})")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        splits = splitter.split(train, strata, groups=train[group_column].to_numpy())
    else:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(train, strata)
    for k, (_, val) in enumerate(splits):
        folds[val] = k
    return folds


def coverage_strata(coverage: np.ndarray, n_folds: int, n_bins: int) -> np.ndarray:
    """Coverage bins, with bins too small to spread over every fold merged into a neighbour."""
    strata = coverage_bins(coverage, n_bins)
    # Merge strata too small to spread over every fold into their neighbour, else sklearn warns and skews.
    counts = np.bincount(strata, minlength=n_bins + 1)
    for b in range(n_bins, 0, -1):
        if not 0 < counts[b] < n_folds:
            continue
        # Merge into the nearest populated non-empty bin (downwards first; bin 1 merges upwards).
        targets = [t for t in (*range(b - 1, 0, -1), *range(b + 1, n_bins + 1)) if counts[t] > 0]
        if targets:
            strata[strata == b] = targets[0]
            counts[targets[0]] += counts[b]
            counts[b] = 0
    return strata

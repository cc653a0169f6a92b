"""Fold assignment: StratifiedKFold on coverage bins (empty masks are their own bin), or
StratifiedGroupKFold when groups are given (a metadata column, or mosaic groups)."""

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


def make_folds(train: pd.DataFrame, n_folds: int, n_bins: int, seed: int, group_column: str | None) -> np.ndarray:
    """Fold index per row of `train` (needs columns id, coverage, and the group column)."""
    strata = coverage_bins(train["coverage"].to_numpy(), n_bins)
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

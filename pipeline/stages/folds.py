"""Folds: StratifiedKFold on coverage bins (empty masks are their own bin), or
StratifiedGroupKFold when the config names a group column or asks for mosaic groups
(tiles that touch in the original image, found from their edges: pipeline/mosaic.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from pipeline import mosaic
from pipeline.cache import Context
from pipeline.errors import UserError
from pipeline.store import ArrayStore

MOSAIC_COLUMN = "mosaic_group"


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


def load_folds(folder) -> pd.DataFrame:
    """folds.csv of a folds artifact: id, fold, coverage, stratum."""
    return pd.read_csv(folder / "folds.csv", dtype={"id": str})


def run(ctx: Context) -> dict:
    cfg = ctx.cfg.folds
    train = pd.read_csv(ctx.upstream["ingest"] / "train.csv", dtype={"id": str})
    if len(train) < cfg.n_folds:
        raise UserError(f"folds.n_folds={cfg.n_folds} but only {len(train)} train images")
    group_column, metrics = cfg.group_column, {}
    if cfg.mosaic.enabled:
        train[MOSAIC_COLUMN], metrics = _mosaic_groups(ctx, train["id"].tolist())
        group_column = MOSAIC_COLUMN
    folds = make_folds(train, cfg.n_folds, cfg.coverage_bins, cfg.seed, group_column)
    out = pd.DataFrame(
        {
            "id": train["id"],
            "fold": folds,
            "coverage": train["coverage"],
            "stratum": coverage_bins(train["coverage"].to_numpy(), cfg.coverage_bins),
        }
    )
    if group_column:
        out["group"] = train[group_column].to_numpy()
    ctx.dir.mkdir(parents=True, exist_ok=True)
    out.to_csv(ctx.dir / "folds.csv", index=False)
    sizes = out.groupby("fold").size().tolist()
    empty = out.assign(e=out["coverage"] == 0).groupby("fold")["e"].mean().round(3).tolist()
    return {"fold_sizes": sizes, "fold_empty_share": empty, **metrics}


def _mosaic_groups(ctx: Context, ids: list[str]) -> tuple[np.ndarray, dict]:
    """Mosaic group per id; the pairs found go to mosaic_pairs.csv for inspection."""
    store = ArrayStore(ctx.upstream["ingest"], "images")
    images = [np.asarray(store.get(i)) for i in ids]
    shapes = {im.shape[:2] for im in images}
    if len(shapes) > 1:
        raise UserError(f"folds.mosaic: needs tiles of one size, found {len(shapes)} sizes (e.g. {sorted(shapes)[:2]})")
    pairs = mosaic.find_pairs(mosaic.grayscale_tiles(images), ctx.cfg.folds.mosaic.margin)
    groups = mosaic.groups_from_pairs(len(ids), pairs)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    pairs.assign(a=[ids[i] for i in pairs["a"]], b=[ids[i] for i in pairs["b"]]).to_csv(ctx.dir / "mosaic_pairs.csv", index=False)
    sizes = np.bincount(groups)
    return groups, {"mosaic_pairs": len(pairs), "mosaic_groups_over_1": int((sizes > 1).sum()), "mosaic_largest_group": int(sizes.max())}

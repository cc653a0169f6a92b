"""Folds: StratifiedKFold on coverage bins (empty masks are their own bin), or
StratifiedGroupKFold when the config names a group column or asks for mosaic groups
(tiles that touch in the original image, found from their edges: pipeline/neighbours/mosaic.py), embedding
clusters (the embed stage's KMeans clusters: similar images share a fold), duplicate groups
(exact and near-duplicate images: pipeline/data/duplicates.py), joined when several are on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.data.duplicates import duplicate_pairs
from pipeline.data.metadata import check_group_column
from pipeline.data.splits import class_strata, coverage_bins, coverage_strata, make_folds
from pipeline.data.tables import class_presence, read_train_table
from pipeline.engine.cache import Context
from pipeline.neighbours import mosaic

MOSAIC_COLUMN = "mosaic_group"


def run(ctx: Context) -> dict:
    cfg = ctx.cfg.folds
    train = read_train_table(ctx.upstream["ingest"])
    check_group_column(train, cfg.group_column, ctx.cfg.data.metadata, ctx.cfg.data.id_column)
    if len(train) < cfg.n_folds:
        raise UserError(f"folds.n_folds={cfg.n_folds} but only {len(train)} train images")
    group_column, metrics = cfg.group_column, {}
    if cfg.mosaic.enabled or cfg.clusters or cfg.duplicates:
        own = train[cfg.group_column].to_numpy() if cfg.group_column else None
        train[MOSAIC_COLUMN], metrics = _groups(ctx, train["id"].tolist(), own)
        group_column = MOSAIC_COLUMN
    strata = _strata(ctx, train)
    folds = make_folds(train, cfg.n_folds, strata, cfg.seed, group_column)
    stratum = strata if cfg.stratify == "classes" else coverage_bins(train["coverage"].to_numpy(), cfg.coverage_bins)
    out = pd.DataFrame({"id": train["id"], "fold": folds, "coverage": train["coverage"], "stratum": stratum})
    if group_column:
        out["group"] = train[group_column].to_numpy()
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(ctx.dir / "folds.csv", out)
    sizes = out.groupby("fold").size().tolist()
    empty = out.assign(e=out["coverage"] == 0).groupby("fold")["e"].mean().round(3).tolist()
    return {"fold_sizes": sizes, "fold_empty_share": empty, **metrics} | _class_counts(ctx, train, folds)


def _strata(ctx: Context, train: pd.DataFrame) -> np.ndarray:
    """Coverage bins, or with folds.stratify = classes each image's class combination (one
    binary class: empty or not)."""
    cfg = ctx.cfg.folds
    if cfg.stratify == "classes":
        classes = ctx.cfg.data.classes
        presence = class_presence(train, classes) if classes else train[["coverage"]].to_numpy() > 0
        return class_strata(presence, cfg.n_folds)
    return coverage_strata(train["coverage"].to_numpy(), cfg.n_folds, cfg.coverage_bins)


def _class_counts(ctx: Context, train: pd.DataFrame, folds: np.ndarray) -> dict:
    """K classes: how many images of each class each fold holds."""
    classes = ctx.cfg.data.classes
    if not classes:
        return {}
    presence = class_presence(train, classes)
    return {
        "fold_class_images": {
            c: np.bincount(folds[presence[:, j]], minlength=ctx.cfg.folds.n_folds).tolist() for j, c in enumerate(classes)
        }
    }


def _linked(labels: np.ndarray) -> pd.DataFrame:
    """Pairs linking each row to the first row of its label: the components are the labels."""
    first = pd.Series(np.arange(len(labels))).groupby(labels).transform("min").to_numpy()
    return pd.DataFrame({"a": np.arange(len(labels)), "b": first})


def _groups(ctx: Context, ids: list[str], own: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Mosaic groups, embedding clusters, duplicate groups and the group column's groups, joined
    (tiles linked by any relation share a group)."""
    cfg = ctx.cfg.folds
    pairs, metrics = _mosaic_pairs(ctx, ids) if cfg.mosaic.enabled else (pd.DataFrame({"a": [], "b": []}), {})
    pairs = pairs[["a", "b"]]
    if cfg.clusters:
        table = fileio.read_csv(ctx.upstream["embed"] / "clusters.csv", dtype={"id": str}).set_index("id")
        pairs = pd.concat([pairs, _linked(table.loc[ids, "cluster"].to_numpy())])
    if own is not None:
        pairs = pd.concat([pairs, _linked(own)])
    if cfg.duplicates:
        store = ArrayStore(ctx.upstream["ingest"], "images")
        found = duplicate_pairs([np.asarray(store.get(i)) for i in ids])
        metrics["duplicate_pairs"] = len(found)
        pairs = pd.concat([pairs, pd.DataFrame(found, columns=["a", "b"], dtype=np.int64)])
    groups = mosaic.groups_from_pairs(len(ids), pairs)
    sizes = np.bincount(groups)
    # the names mosaic folds always had
    prefix = "" if cfg.clusters else "mosaic_" if cfg.mosaic.enabled else "duplicate_"
    return groups, metrics | {f"{prefix}groups_over_1": int((sizes > 1).sum()), f"{prefix}largest_group": int(sizes.max())}


def _mosaic_pairs(ctx: Context, ids: list[str]) -> tuple[pd.DataFrame, dict]:
    """Mosaic group per id; the pairs found go to mosaic_pairs.csv for inspection."""
    store = ArrayStore(ctx.upstream["ingest"], "images")
    images = [np.asarray(store.get(i)) for i in ids]
    pairs = mosaic.find_pairs(mosaic.grayscale_tiles(images), ctx.cfg.folds.mosaic.margin)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(ctx.dir / "mosaic_pairs.csv", pairs.assign(a=[ids[i] for i in pairs["a"]], b=[ids[i] for i in pairs["b"]]))
    return pairs, {"mosaic_pairs": len(pairs)}

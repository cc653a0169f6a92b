"""Helpers for the notebooks in notebooks/: artifacts opened through `pipeline.api` only, and
small matplotlib figures. Nothing here writes to an artifact folder."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from pipeline import api
from pipeline.config.schema import Config
from pipeline.core.fileio import read_csv
from pipeline.core.store import ArrayStore, map_of
from pipeline.data.classrows import class_of_row, flat, keys, read_rows, repeat, row_probs, truth_planes
from pipeline.data.splits import coverage_bins
from pipeline.data.tables import load_folds
from pipeline.postprocessing.masks import candidate_scores

if TYPE_CHECKING:  # ensemble_io imports torch (via predict); only 02/03 need it
    from pipeline.inference.ensemble_io import EnsembleOutputs

# train.csv columns written by ingest itself; every other column came from the metadata CSVs.
OWN_COLUMNS = ("id", "height", "width", "coverage", "empty")


# ----------------------------------------------------------------------------- loading


def train_table(cfg: Config) -> tuple[pd.DataFrame, dict]:
    """The ingest artifact's train.csv (id, size, coverage, metadata) and stats.json."""
    folder = api.artifact(cfg, "ingest")
    table = read_csv(folder / "train.csv")
    return table, json.loads((folder / "stats.json").read_text())


def numeric_metadata(table: pd.DataFrame) -> list[str]:
    """Numeric metadata columns of a train table (e.g. depth `z`), ingest's own columns excluded."""
    return [c for c in table.select_dtypes("number").columns if c not in OWN_COLUMNS]


def train_stores(cfg: Config) -> tuple[ArrayStore, ArrayStore]:
    """Train images and masks of the ingest artifact."""
    folder = api.artifact(cfg, "ingest")
    return ArrayStore(folder, "images"), ArrayStore(folder, "masks")


def ensemble_outputs(cfg: Config) -> EnsembleOutputs:
    """Blended OOF/test maps of the ensemble artifact, with the ingest data they refer to."""
    from pipeline.inference.ensemble_io import EnsembleOutputs

    return EnsembleOutputs(api.artifact(cfg, "ensemble"), api.artifact(cfg, "ingest"), api.artifact(cfg, "ingest_test"))


def oof_frame(cfg: Config) -> pd.DataFrame:
    """Per-image OOF scores of the segment stage (id, fold, tgs, dice; a row per (image, class)
    with a class column for K classes) with the image's coverage, its fold stratum (0 = empty,
    then equal-width bins) and the classifier's OOF probability (NaN when it is disabled)."""
    scores = read_rows(api.artifact(cfg, "segment") / "oof_scores.csv")
    folds = load_folds(api.artifact(cfg, "folds"))[["id", "coverage", "stratum"]]
    out = scores.merge(folds, on="id", how="left")
    ids = list(dict.fromkeys(out["id"]))
    probs = row_probs(classifier_oof(cfg), ids, cfg.data.classes)
    out["cls_prob"] = pd.Series(probs, index=keys(ids, cfg.data.classes)).reindex(_row_keys(out)).to_numpy()
    return out


def _row_keys(table: pd.DataFrame) -> list[str]:
    """The row key (pipeline.data.classrows.keys) of each row of an id (, class) table."""
    if "class" not in table.columns:
        return table["id"].tolist()
    return [f"{i}_{c}" for i, c in zip(table["id"], table["class"], strict=True)]


def classifier_oof(cfg: Config) -> pd.DataFrame | None:
    """The empty-mask classifier's OOF probabilities (id, fold, prob, label): from the classify
    stage, or from the segment stage with classify.source = seg_head; None when disabled."""
    if not cfg.classify.enabled:
        return None
    stage = "segment" if cfg.classify.seg_head else "classify"
    path = api.artifact(cfg, stage) / "oof_cls.csv"
    return read_rows(path) if path.exists() else None


def segment_oof_maps(cfg: Config, ids: Sequence[str]) -> list[np.ndarray]:
    """The segment stage's OOF probability maps (float32 in [0, 1]; (h, w, K) for K classes) for `ids`."""
    store = ArrayStore(api.artifact(cfg, "segment"), "oof")
    return [map_of(store.get(i)).astype(np.float32) for i in ids]


def row_maps(cfg: Config, rows: pd.DataFrame) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The truth mask and the segment stage's OOF map of each row of an oof_frame table: the
    image's, or for K classes the row's class plane of each."""
    _, masks = train_stores(cfg)
    maps = segment_oof_maps(cfg, rows["id"].tolist())
    if "class" not in rows.columns:
        return [masks.get(i) for i in rows["id"]], maps
    names, k = list(cfg.data.classes), len(cfg.data.classes)
    at = [names.index(c) for c in rows["class"]]
    truths = [truth_planes(masks.get(i), k)[c] for i, c in zip(rows["id"], at, strict=True)]
    return truths, [m[..., c] for m, c in zip(maps, at, strict=True)]


def coverage_bin_labels(coverage: np.ndarray, n_bins: int) -> list[str]:
    """Readable label per image of the fold strata: 'empty' or the coverage range in %."""
    width = 100 / n_bins
    return ["empty" if b == 0 else f"{(b - 1) * width:.0f}-{b * width:.0f}%" for b in coverage_bins(coverage, n_bins)]


# ----------------------------------------------------------------------------- post-processing


def candidate_table(cands: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Mean per-image score of each candidate (threshold, min_area, gate), best first."""
    table = pd.DataFrame(cands, columns=["threshold", "min_area", "gate"])
    table["score"] = scores.mean(axis=0)
    return table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def sweep(ens: EnsembleOutputs, thresholds: Sequence[float], min_areas: Sequence[int], gates: Sequence[float], metric: str) -> pd.DataFrame:
    """candidate_table over a grid, scored on the ensemble's blended OOF maps."""
    cands, scores = candidate_scores(ens.truths(), flat(ens.oof_probs()), ens.oof_cls, thresholds, min_areas, gates, metric)
    return candidate_table(cands, scores)


def scorer_policy(cfg: Config) -> dict:
    """The scorer's policy.json: chosen policy, nested-CV mean metric per policy, grid best."""
    return json.loads((api.artifact(cfg, "scorer") / "policy.json").read_text())


@dataclass
class ScorerData:
    """What the scorer stage fitted on: per-image features, the candidate grid, the true
    per-image score of every candidate and each image's fold."""

    features: pd.DataFrame  # index id (row key), columns as in oof_features.csv
    cands: np.ndarray  # (C, 3): threshold, min_area, gate
    scores: np.ndarray  # (N, C), N rows: images, or (image, class) pairs
    fold: np.ndarray  # (N,)
    row_class: np.ndarray | None = None  # K classes: each row's class index


def scorer_data(cfg: Config, ens: EnsembleOutputs | None = None) -> ScorerData:
    """Rebuild the scorer's training data from its artifact (oof_features.csv) and the
    ensemble's OOF maps scored on the config's candidate grid."""
    ens = ens or ensemble_outputs(cfg)
    features = read_csv(api.artifact(cfg, "scorer") / "oof_features.csv").set_index("id")
    if features.index.tolist() != keys(ens.oof_ids, ens.classes):
        raise ValueError("scorer oof_features.csv ids differ from the ensemble's OOF ids")
    s = cfg.scorer
    cands, scores = candidate_scores(
        ens.truths(), flat(ens.oof_probs()), ens.oof_cls, s.thresholds, s.min_areas, s.gates, cfg.submit.metric
    )
    fold = load_folds(api.artifact(cfg, "folds")).set_index("id").loc[ens.oof_ids, "fold"].to_numpy()
    row_class = class_of_row(len(ens.oof_ids), ens.k) if ens.k > 1 else None
    return ScorerData(features, cands, scores, repeat(fold, ens.k), row_class)


def held_out_predictions(cfg: Config, data: ScorerData) -> tuple[dict[str, float], np.ndarray]:
    """Refit the scorer's nested CV (same params, seed and folds): each policy's held-out mean
    metric and the (N, C) held-out predictions (each fold predicted by a model fitted on the others)."""
    from pipeline.postprocessing.score_predictor import Problem, nested_cv

    p = Problem(
        data.features,
        data.cands,
        data.scores,
        data.fold,
        cfg.scorer.lgbm,
        cfg.experiment.seed,
        row_class=data.row_class,
        difficulty=cfg.scorer.difficulty,
    )
    nested, pred = nested_cv(p, False)
    return nested, pred


def booster_predictions(cfg: Config, data: ScorerData) -> np.ndarray:
    """(N, C) predictions of the scorer's saved model `lgbm.txt` (fitted on all OOF: in-sample)."""
    import lightgbm as lgb

    from pipeline.postprocessing.score_predictor import design

    booster = lgb.Booster(model_file=str(api.artifact(cfg, "scorer") / "lgbm.txt"))
    x = design(data.features, data.cands)[booster.feature_name()]
    return booster.predict(x.to_numpy(dtype=float)).reshape(len(data.features), len(data.cands))


# ----------------------------------------------------------------------------- figures


def spread_sample(coverage: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of `n` images spread over the coverage range: one empty image (if any), the
    rest at evenly spaced coverage quantiles of the non-empty ones."""
    coverage = np.asarray(coverage, dtype=float)
    rng = np.random.default_rng(seed)
    empty, filled = np.flatnonzero(coverage == 0), np.flatnonzero(coverage > 0)
    picks = [int(rng.choice(empty))] if len(empty) and n > 0 else []
    if len(filled):
        order = filled[np.argsort(coverage[filled], kind="stable")]
        k = min(n - len(picks), len(order))
        picks += [int(order[j]) for j in np.linspace(0, len(order) - 1, k).round().astype(int)] if k > 0 else []
    return np.array(list(dict.fromkeys(picks)), dtype=int)


def overlay_grid(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray] | None = None,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    threshold: float = 0.5,
) -> Figure:
    """Images in gray with the true mask filled in green and, when given, the predicted
    probability map's `threshold` contour in red."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.7 * nrows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        ax.axis("off")
        if j >= n:
            continue
        img = np.asarray(images[j])
        ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img, cmap="gray")
        truth = np.asarray(truths[j]).squeeze() > 0
        ax.imshow(np.ma.masked_where(~truth, truth), cmap=ListedColormap(["lime"]), alpha=0.35, vmin=0, vmax=1)
        if preds is not None:
            pred = np.asarray(preds[j]) > threshold
            if pred.any() and not pred.all():
                ax.contour(pred, levels=[0.5], colors="red", linewidths=1)
            elif pred.all():
                ax.add_patch(plt.Rectangle((0, 0), pred.shape[1] - 1, pred.shape[0] - 1, fill=False, edgecolor="red", lw=2))
        if titles is not None:
            ax.set_title(titles[j], fontsize=8)
    fig.tight_layout()
    return fig

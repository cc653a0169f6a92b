"""Segmentation fold training and inference, shared by the segment, pseudo and ensemble
stages: an smp model with an optional distance-map head (and optionally the empty-mask
classifier as a head on its encoder), trained by the shared loop; OOF maps per fold; test
maps averaged over a folder's fold models."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config.schema import Config
from pipeline.core import distributed, fileio, runtime
from pipeline.core.runtime import pick_device
from pipeline.core.store import ArrayStore, map_of, quantise, write_store
from pipeline.data.classrows import class_of_row, cls_frame, planes, read_rows, repeat, truth_planes
from pipeline.data.datasets import Geometry, SegDataset, build_augment
from pipeline.data.tables import fold_model_paths
from pipeline.evaluation.oof import score_probs
from pipeline.evaluation.roc import roc_outputs
from pipeline.inference.fold_models import TestMaps, build_model, seg_test_maps
from pipeline.inference.fold_models import seg_infer_spec as infer_spec
from pipeline.inference.predict import predict
from pipeline.training import options
from pipeline.training.loop import Fitter
from pipeline.training.options.base import Fold
from pipeline.training.options.rounds import FoldExtras
from pipeline.training.seg_task import SEG_HEAD_WEIGHT, row_scores, seg_task
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


def train_fold(cfg: Config, folder: Path, data: TrainSet, k: int, extras: FoldExtras | None = None) -> torch.nn.Module:
    """Train fold k into `folder` (resuming if interrupted) and return the final model. The
    training options (pipeline/training/options) shape the fold hook by hook; this function only
    calls the hooks in order."""
    scfg = cfg.segment
    device = pick_device(cfg.experiment)
    seed = cfg.experiment.seed + k
    train_idx, val_idx = data.split(k, scfg.train.max_images, cfg.experiment.seed)
    runtime.seed_everything(seed)  # the model's random init must not depend on what ran before
    model = build_model(scfg, data.in_channels, cfg.classify.seg_head, data.k)
    fold = Fold(cfg, data, k, folder, seed, device, train_idx, val_idx, data.masks, data.k, folder, images=data.images)
    plugins = options.for_fold(cfg, extras)
    for o in plugins:
        o.start(fold, model)
    augment = build_augment(scfg.train.augment, seed)
    for o in plugins:
        o.targets(fold)
    for o in plugins:
        o.views(fold)
    fold.dataset = SegDataset(
        fold.images,
        fold.masks,
        train_idx,
        Geometry.from_cfg(scfg.input),
        augment,
        scfg.aux.signed,
        seed,
        soft=fold.soft,
        classes=fold.classes,
    )
    fold.coverage = data.coverage[train_idx]
    for o in plugins:
        o.samples(fold)
    fold.spec = infer_spec(scfg, device, ["none"])
    fold.task = seg_task(scfg, _validator(fold), SEG_HEAD_WEIGHT if cfg.classify.seg_head else 0.0)
    for o in plugins:
        o.task(fold)
    if any(o.finished(fold, model) for o in plugins):
        return model
    for o in plugins:
        o.weights(fold)
    Fitter(model, fold.task, scfg.train, fold.fit_dir, device, seed).fit(fold.dataset, fold.weights)
    model.load_state_dict(torch.load(fold.fit_dir / "model.pt", map_location=device, weights_only=True))
    for o in plugins:
        o.after(fold, model)
    return model


def _validator(fold: Fold):
    """Validation of a fold's model: its mean row score on the fold's validation images."""
    scfg, truths = fold.cfg.segment, fold.data.truths(fold.val_idx)
    seen = fold.data.seen(scfg)

    def validate(m) -> dict[str, float]:
        return {"score": float(row_scores(m, seen, fold.val_idx, fold.spec, truths, scfg.train.eval_threshold).mean())}

    return validate


def predict_oof(cfg: Config, model: torch.nn.Module, data: TrainSet, k: int, folder: Path) -> None:
    """OOF maps of fold k with TTA, stored quantised in the fold folder (by rank 0 alone under
    torchrun)."""
    if (folder / "oof.index.csv").exists() or not distributed.is_main():
        return
    _, val_idx = data.split(k, 0, cfg.experiment.seed)
    spec = infer_spec(cfg.segment, pick_device(cfg.experiment), cfg.segment.train.tta, cfg.experiment)
    # Quantised as they come (what the stores hold anyway): a fold's float maps would grow
    # with the training set.
    ids, maps, cls = [], {"oof": [], "oof_dist": []}, []
    for i, o in predict(model, data.seen(cfg.segment), val_idx, spec):
        ids.append(data.images.ids[i])
        maps["oof"].append(quantise(o["mask"]))
        if "dist" in o:
            maps["oof_dist"].append(quantise(o["dist"]))
        if "cls" in o:
            cls.append(o["cls"])
    if cls:
        fileio.write_csv(folder / "oof_cls.csv", cls_frame(ids, cls, data.classes))
    for name in ("oof_dist", "oof") if cfg.segment.aux.weight > 0 else ("oof",):
        write_store(folder, name, zip(ids, maps[name], strict=True))


def merge_oof(stage_dir: Path, fold_dirs: list[Path], names: tuple[str, ...], order: list[str]) -> None:
    """Fold OOF stores -> one store per name in train order (each id exactly once)."""
    for name in names:
        parts = [ArrayStore(d, name) for d in fold_dirs if (d / f"{name}.index.csv").exists()]
        if not parts:
            continue
        where = {i: p for p in parts for i in p.ids}
        write_store(stage_dir, name, ((i, np.asarray(where[i].get(i))) for i in order if i in where))


def oof_scores(stage_dir: Path, data: TrainSet, threshold: float = 0.5) -> pd.DataFrame:
    """Per-image OOF metric (TGS mAP and Dice) at a pixel threshold; per (image, class) row,
    with a `class` column, for K classes."""
    oof = ArrayStore(stage_dir, "oof")
    probs = [p for i in range(len(oof)) for p in planes(map_of(oof[i]))]
    truths = data.truths_of(oof.ids)
    fold_of = data.fold_of()
    table = pd.DataFrame(
        {
            "id": repeat(oof.ids, data.k),
            "fold": repeat([fold_of[i] for i in oof.ids], data.k),
            "tgs": score_probs(truths, probs, threshold, "tgs"),
            "dice": score_probs(truths, probs, threshold, "dice"),
        }
    )
    if data.k > 1:
        table.insert(1, "class", np.asarray(data.classes)[class_of_row(len(oof), data.k)])
    return table


def merge_cls(stage_dir: Path, fold_dirs: list[Path], data: TrainSet) -> dict:
    """The seg_head classifier's OOF probabilities (as the classify stage writes them) and ROC;
    for K classes a row per (image, class), labelled by that class's presence, with each
    class's AUC beside the AUC over all rows."""
    oof = pd.concat([read_rows(d / "oof_cls.csv") for d in fold_dirs])
    oof["fold"] = oof["id"].map(data.fold_of())
    if data.k == 1:
        oof["label"] = (oof["id"].map(dict(zip(data.images.ids, data.coverage, strict=True))) > 0).astype(int)
    else:
        present = {i: [t.any() for t in truth_planes(data.masks.get(i), data.k)] for i in oof["id"].unique()}
        oof["label"] = [int(present[i][data.classes.index(c)]) for i, c in zip(oof["id"], oof["class"], strict=True)]
    fileio.write_csv(stage_dir / "oof_cls.csv", oof)
    return roc_outputs(stage_dir, oof)


def fold_models(model_dir: Path, folds: list[int] | None = None) -> list[Path]:
    """The fold models of a folder (all, or those of `folds`)."""
    paths = fold_model_paths(model_dir, folds)
    if not paths:
        raise FileNotFoundError(f"no fold models under {model_dir}" + (f" for folds {folds}" if folds is not None else ""))
    return paths


def predict_test(cfg: Config, model_dir: Path, test_images: ArrayStore, adabn: bool = False, folds: list[int] | None = None) -> TestMaps:
    """Test probability (and distance) maps: every fold model of `model_dir` (or those of
    `folds`), with TTA, averaged, at each image's original size; `adabn` re-estimates BatchNorm
    statistics on the test images first."""
    return seg_test_maps(cfg, fold_models(model_dir, folds), test_images, adabn)

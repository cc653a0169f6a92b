"""Pseudo-labeling stage: select confidently predicted test images, label them (hard or
soft), and fine-tune each fold's segmentation model on its training part plus those images;
with pseudo.mean_teacher, all test images also add a consistency loss against an EMA teacher.

Honest CV: fold k's pseudo-labels come from fold k's own model of the previous round only,
never from the fold average. Every other fold's model trained on fold k's validation images,
so its test predictions carry what it learnt from their labels, and fine-tuning fold k on them
would leak those labels into fold k's OOF score (a second-order leak). Pseudo images only ever
enter training parts. The test submission still averages every fold.

Round r labels with round r-1's models (round 0 = the segment stage's)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config.schema import Config
from pipeline.core import distributed, fileio
from pipeline.core.errors import UserError
from pipeline.core.locks import fold_lock
from pipeline.core.store import ArrayStore
from pipeline.data.datasets import Geometry, SegDataset, build_augment
from pipeline.engine.cache import Context
from pipeline.inference.fold_models import TestMaps
from pipeline.training import pseudo_select as pseudo_rank
from pipeline.training.classifier import predict_test as classifier_test
from pipeline.training.mean_teacher import MeanTeacher
from pipeline.training.mutual_teacher import MutualTeacher
from pipeline.training.pseudo_labels import LABELS, Reindexed, label_coverage, round_cfg, select, write_labels
from pipeline.training.segmentation import (
    SEG_HEAD_WEIGHT,
    FoldExtras,
    build_model,
    merge_cls,
    merge_oof,
    oof_scores,
    predict_oof,
    predict_test,
    seg_task,
    train_fold,
)
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


def _fold_cls(ctx: Context, k: int, maps_cls: np.ndarray | None, test_images: ArrayStore) -> np.ndarray:
    """Fold k's empty-mask probabilities for the test images: its segmentation head's, or its
    separate classifier's (NaN, no gating, when there is none for fold k)."""
    cfg = ctx.cfg
    if cfg.classify.seg_head:
        return maps_cls
    cls = classifier_test(cfg, ctx.upstream["classify"], test_images, folds=[k])
    if cfg.classify.enabled and np.isnan(cls).all():
        logger.warning(f"pseudo fold{k}: classify.train.folds has no fold {k}, so its pseudo-labels are chosen without the classifier")
    return cls


def _fold_maps(ctx: Context, k: int, prev: Path, images) -> TestMaps:
    """Fold k's previous model's maps of `images`, with fold k's empty-mask probabilities."""
    maps = predict_test(ctx.cfg, prev, images, folds=[k])
    return maps._replace(cls=_fold_cls(ctx, k, maps.cls, images))


def _predicted(ctx: Context, k: int, prev: Path, data: TrainSet, test: tuple[TestMaps, ArrayStore]) -> np.ndarray:
    """pseudo.score_select: fold k's predicted metric of each test image, from a predictor
    fitted on fold k's model's maps of its own training part (pipeline/training/pseudo_select.py)."""
    train_idx, _ = data.split(k, 0, ctx.cfg.experiment.seed)
    images = Reindexed(data.images, train_idx)
    fit = (_fold_maps(ctx, k, prev, images), images, data.truths(train_idx))
    predicted, in_sample = pseudo_rank.predicted_scores(ctx.cfg, fit, test)
    logger.info(
        f"pseudo fold{k}: in-sample metric {in_sample.mean():.3f}, predicted test metric {predicted.mean():.3f} +- {predicted.std():.3f}"
    )
    if predicted.std() < 1e-3:
        logger.warning(f"pseudo fold{k}: score_select predicts one score for every test image; confidence alone orders them")
    return predicted


def _labelled_ids(ctx: Context, k: int, folder: Path, prev: Path, data: TrainSet, test_images: ArrayStore) -> list[str]:
    """Fold k's pseudo-labelled test ids, chosen and labelled (into `folder`) by fold k's
    previous model and fold k's classifier alone."""
    if (folder / f"{LABELS}.index.csv").exists():
        # Chosen by an earlier run of this fold (a fold-parallel run, or one interrupted): its
        # model trained on these, and labelling again (other threads, another device) could
        # differ in a borderline pixel or image.
        return list(ArrayStore(folder, LABELS).ids)
    maps = _fold_maps(ctx, k, prev, test_images)
    predicted = None
    if ctx.cfg.pseudo.score_select.enabled:
        predicted = _predicted(ctx, k, prev, data, (maps, test_images))
        folder.mkdir(parents=True, exist_ok=True)
        fileio.write_csv(folder / pseudo_rank.PREDICTED_CSV, pd.DataFrame({"id": test_images.ids, "predicted": predicted}))
    chosen = select(ctx.cfg.pseudo, maps.masks, maps.cls, predicted)
    ids = [test_images.ids[i] for i in chosen]
    write_labels(folder, ids, [maps.masks[i] for i in chosen], ctx.cfg.pseudo.soft)
    return ids


def _fold_labels(ctx: Context, k: int, r: int, prev: Path, data: TrainSet, test_images: ArrayStore) -> tuple[SegDataset, np.ndarray]:
    """Fold k's pseudo-labelled test images of round r, as a training dataset and coverage."""
    cfg, pcfg = ctx.cfg, ctx.cfg.pseudo
    folder = ctx.dir / f"round{r}" / f"fold{k}"
    # Under torchrun rank 0 labels, and every process trains on what it wrote.
    ids = distributed.on_main(lambda: _labelled_ids(ctx, k, folder, prev, data, test_images))
    labels = ArrayStore(folder, LABELS)
    seed = cfg.experiment.seed + 1000 * r + k
    extra = SegDataset(
        Reindexed(test_images, np.array([test_images.position(i) for i in ids], dtype=int)),
        labels,
        np.arange(len(ids)),
        Geometry.from_cfg(cfg.segment.input),
        # Seeded like every other augmentation: an unseeded albumentations pipeline draws from
        # its own entropy, which made the pseudo round differ between runs.
        build_augment(cfg.segment.train.augment, seed),
        cfg.segment.aux.signed,
        seed,
        soft=pcfg.soft,
        classes=data.k,
    )
    return extra, label_coverage(labels, ids, pcfg.soft)


def _teacher(rcfg: Config, test_images: ArrayStore, init: Path, data: TrainSet, seed: int) -> MeanTeacher:
    """A mean teacher, or with `mutual` a mutual one whose peer starts from the fold's previous model."""
    mt, geometry = rcfg.pseudo.mean_teacher, Geometry.from_cfg(rcfg.segment.input)
    if not mt.mutual:
        return MeanTeacher(test_images, geometry, mt, rcfg.segment, seed)
    if distributed.active():  # the peer steps outside DDP: each process's peer would drift apart
        raise UserError("pseudo.mean_teacher.mutual: not under torchrun yet; run the pseudo stage in one process per fold (--fold)")
    peer = build_model(rcfg.segment, data.in_channels, rcfg.classify.seg_head, data.k)
    peer.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    supervised = seg_task(rcfg.segment, None, SEG_HEAD_WEIGHT if rcfg.classify.seg_head else 0.0).loss
    return MutualTeacher(test_images, geometry, mt, rcfg.segment, seed, peer=peer, supervised=supervised)


def run_round(ctx: Context, r: int, prev: Path, data: TrainSet, test_images: ArrayStore) -> dict:
    cfg, pcfg = ctx.cfg, ctx.cfg.pseudo
    rdir = ctx.dir / f"round{r}"
    rcfg = round_cfg(cfg)
    selected, nonempty = {}, {}
    for k in ctx.folds_to_run(data.fold_ids(cfg.segment.train.folds)):
        fold_dir = rdir / f"fold{k}"
        with fold_lock(fold_dir):  # fold-parallel runs of this stage never train one fold twice
            extra, cov = _fold_labels(ctx, k, r, prev, data, test_images)
            selected[f"fold{k}"], nonempty[f"fold{k}"] = len(cov), int((cov > 0).sum())
            seed = cfg.experiment.seed + 1000 * r + k
            init = prev / f"fold{k}" / "model.pt"
            teacher = _teacher(rcfg, test_images, init, data, seed) if pcfg.mean_teacher.enabled else None
            model = train_fold(rcfg, fold_dir, data, k, FoldExtras((extra, cov), init, teacher))
            predict_oof(rcfg, model, data, k, fold_dir)
    if ctx.stops_before_merge:  # a fold-parallel run, or not rank 0: a run of all folds merges and scores each round
        return {"round": r, "selected": selected, "selected_nonempty": nonempty}
    fold_dirs = sorted(d for d in rdir.glob("fold*") if d.is_dir())
    merge_oof(rdir, fold_dirs, ("oof", "oof_dist"), data.images.ids)
    if cfg.classify.seg_head:  # the round's head probabilities, for a blend that it leads
        merge_cls(rdir, fold_dirs, data)
    scores = oof_scores(rdir, data, cfg.segment.train.eval_threshold)
    return {
        "round": r,
        "selected": selected,
        "selected_nonempty": nonempty,
        "mean_teacher": pcfg.mean_teacher.enabled,
        "oof_tgs": round(float(scores["tgs"].mean()), 4),
    }


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ctx.dir.mkdir(parents=True, exist_ok=True)
    if cfg.pseudo.rounds <= 0:
        return {"rounds": 0}
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"], ctx.upstream.get("embed"))
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    base = oof_scores(ctx.upstream["segment"], data, cfg.segment.train.eval_threshold)
    history = [{"round": 0, "selected": 0, "oof_tgs": round(float(base["tgs"].mean()), 4)}]
    prev = ctx.upstream["segment"]
    for r in range(1, cfg.pseudo.rounds + 1):
        history.append(run_round(ctx, r, prev, data, test_images))
        logger.info(f"pseudo round {r}: {history[-1]}")
        prev = ctx.dir / f"round{r}"
    if ctx.stops_before_merge:  # fold k's rounds need only fold k's previous models
        return {"history": history}
    fileio.write_json(ctx.dir / "rounds.json", history)
    final = ctx.dir / "final"
    if final.is_symlink() or final.exists():
        final.unlink()
    final.symlink_to(prev.name)
    return {"rounds": cfg.pseudo.rounds, "history": history, "oof_tgs": history[-1]["oof_tgs"]}

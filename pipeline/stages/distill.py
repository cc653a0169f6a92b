"""Distill stage: one student per fold, trained from scratch on the soft maps of fold k's
teachers (pipeline/training/distill.py says why its CV stays honest), its OOF maps and score against the
teachers' nested blend on the same images, and both test inference speeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.config import zoo
from pipeline.config.segment import SegmentCfg
from pipeline.core import distributed, fileio
from pipeline.core.errors import UserError
from pipeline.core.locks import fold_lock
from pipeline.core.store import ArrayStore, map_of, write_store
from pipeline.data.datasets import Geometry, SegDataset, build_augment
from pipeline.data.tables import fold_model_paths
from pipeline.engine.cache import Context
from pipeline.evaluation.oof import paired, score_probs
from pipeline.inference.blend import blend, nested_blend
from pipeline.inference.contract import FittedModel, fitted_models
from pipeline.inference.ensemble_io import common_ids, model_folders
from pipeline.training import distill
from pipeline.training.pseudo_labels import Reindexed
from pipeline.training.segmentation import FoldExtras, merge_cls, merge_oof, oof_scores, predict_oof, train_fold
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)
TEST_TARGETS = "test_targets"  # a fold's soft test targets


class TeacherOOF(NamedTuple):
    """The teachers' OOF maps of the images every teacher has them for (the folds they all
    trained), read once: for the blend weights and for the comparison with the student."""

    ids: list[str]
    maps: list[list[np.ndarray]]  # per teacher, per image

    @classmethod
    def read(cls, folders: dict[str, Path], data: TrainSet) -> TeacherOOF:
        ids = common_ids(folders, data.images.ids)
        return cls(ids, [[map_of(ArrayStore(d, "oof").get(i)) for i in ids] for d in folders.values()])

    def fold_weights(self, data: TrainSet, fit: bool) -> dict[int, np.ndarray]:
        """Each fold's blend weights, fitted on the other folds' OOF alone (as the ensemble
        stage nests them)."""
        fold_of = data.fold_of()
        return nested_blend(self.maps, data.truths_of(self.ids), np.array([fold_of[i] for i in self.ids]), fit).fold_weights


def _test_set(ctx: Context, k: int, probs: list[np.ndarray], test_images: ArrayStore, scfg: SegmentCfg) -> tuple[SegDataset, np.ndarray]:
    """The test images with fold k's tempered teacher maps as soft targets."""
    folder, seed = ctx.dir / f"fold{k}", ctx.cfg.experiment.seed + k
    items = ((i, distill.target(p, None, ctx.cfg.distill)) for i, p in zip(test_images.ids, probs, strict=True))
    distributed.on_main(lambda: write_store(folder, TEST_TARGETS, items))  # under torchrun rank 0 writes, all read
    targets = ArrayStore(folder, TEST_TARGETS)
    ds = SegDataset(
        test_images,
        targets,
        np.arange(len(test_images)),
        Geometry.from_cfg(scfg.input),
        build_augment(scfg.train.augment, seed),
        scfg.aux.signed,
        seed,
        soft=True,
    )
    return ds, np.array([float((targets[i] > 127).mean()) for i in range(len(targets))])


def _train_student(ctx: Context, k: int, teachers: distill.Teachers, weights: np.ndarray, data: TrainSet, test_images: ArrayStore) -> None:
    cfg, dcfg = ctx.cfg, ctx.cfg.distill
    student = teachers.student
    folder = ctx.dir / f"fold{k}"
    train_idx, _ = data.split(k, student.segment.train.max_images, cfg.experiment.seed)
    probs = teachers.maps(k, weights, Reindexed(data.images, train_idx), adabn=False)
    soft = {int(i): distill.target(p, data.masks[int(i)][..., 0] > 0, dcfg) for i, p in zip(train_idx, probs, strict=True)}
    extra = None
    if dcfg.test:
        extra = _test_set(ctx, k, teachers.maps(k, weights, test_images, cfg.ensemble.adabn), test_images, student.segment)
    model = train_fold(student, folder, data, k, FoldExtras(extra=extra, soft_masks=soft))
    predict_oof(student, model, data, k, folder)


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    if not cfg.distill.enabled:
        return {"enabled": False}
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"], ctx.upstream.get("embed"))
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    names = zoo.teachers(cfg)
    folders = model_folders(names, ctx.upstream)
    student = zoo.model_cfg(cfg, cfg.distill.student)
    teachers = distill.Teachers(fitted_models(cfg, folders), student)
    oof = TeacherOOF.read(folders, data)
    weights = oof.fold_weights(data, cfg.ensemble.fit_weights)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fold_dirs = []
    for k in ctx.folds_to_run(data.fold_ids(student.segment.train.folds)):
        if k not in weights:
            raise UserError(
                f"distill: not every teacher has OOF maps of fold {k}; train it, or leave it out of the student's segment.train.folds"
            )
        with fold_lock(ctx.dir / f"fold{k}"):
            if not (ctx.dir / f"fold{k}" / "oof.index.csv").exists():
                _train_student(ctx, k, teachers, weights[k], data, test_images)
        fold_dirs.append(ctx.dir / f"fold{k}")
    if ctx.stops_before_merge:
        return {"folds": [d.name for d in fold_dirs]}
    merge_oof(ctx.dir, fold_dirs, ("oof", "oof_dist"), data.images.ids)
    scores = oof_scores(ctx.dir, data, cfg.segment.train.eval_threshold)
    fileio.write_csv(ctx.dir / "oof_scores.csv", scores)
    head = merge_cls(ctx.dir, fold_dirs, data) if cfg.classify.seg_head else {}
    folds = [int(d.name.removeprefix("fold")) for d in fold_dirs]
    return head | _against_teachers(ctx, teachers, oof, weights, data, scores) | _speeds(ctx, teachers, test_images, folds)


def _against_teachers(ctx: Context, teachers: distill.Teachers, oof: TeacherOOF, weights: dict, data: TrainSet, scores) -> dict:
    """The student's OOF against the teachers' blend with the weights it learnt from (fold k's
    on fold k), paired over the same images at the same threshold."""
    ids = list(scores["id"])
    row = {i: n for n, i in enumerate(oof.ids)}
    fold_of = data.fold_of()
    blended = [blend([[m[row[i]]] for m in oof.maps], weights[fold_of[i]])[0] for i in ids]
    teacher_scores = score_probs(data.truths_of(ids), blended, ctx.cfg.segment.train.eval_threshold)
    student = scores["tgs"].to_numpy()
    mean, se = paired(student - teacher_scores)
    return {
        "oof_tgs": round(float(student.mean()), 4),
        "oof_dice": round(float(scores["dice"].mean()), 4),
        "teachers": list(teachers.models),
        "teachers_oof_tgs": round(float(teacher_scores.mean()), 4),
        "student_minus_teachers": {"mean": round(mean, 4), "se": round(se, 4)},
    }


def _speeds(ctx: Context, teachers: distill.Teachers, test_images: ArrayStore, folds: list[int]) -> dict:
    """Test inference in img/s: the student's fold models against the teachers' of the same folds."""
    adabn = ctx.cfg.ensemble.adabn
    student = FittedModel("student", teachers.student, tuple(fold_model_paths(ctx.dir, folds)), ctx.dir)
    own = distill.images_per_second([student], test_images, adabn)
    blend_speed = distill.images_per_second(teachers.of_folds(folds), test_images, adabn)
    return {"student_img_per_s": round(own, 1), "teachers_img_per_s": round(blend_speed, 1), "speedup": round(own / blend_speed, 2)}

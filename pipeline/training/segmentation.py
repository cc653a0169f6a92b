"""Segmentation fold training and inference, shared by the segment, pseudo and ensemble
stages: an smp model with an optional distance-map head (and optionally the empty-mask
classifier as a head on its encoder), trained by the shared loop; OOF maps per fold; test
maps averaged over a folder's fold models."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config.blocks import ProgressiveCfg
from pipeline.config.schema import Config
from pipeline.config.segment import SegmentCfg, SubclassesCfg
from pipeline.core import distributed, fileio, runtime
from pipeline.core.errors import UserError
from pipeline.core.runtime import pick_device
from pipeline.core.store import ArrayStore, map_of, quantise, write_store
from pipeline.data.classrows import class_of_row, cls_frame, planes, read_rows, repeat, truth_planes
from pipeline.data.datasets import Geometry, SegDataset, build_augment, crop_batch, sample_weights
from pipeline.data.multiclass import pack
from pipeline.data.tables import fold_model_paths
from pipeline.evaluation.oof import score_probs
from pipeline.evaluation.roc import roc_outputs, safe_auc
from pipeline.inference.fold_models import TestMaps, build_model, seg_test_maps
from pipeline.inference.fold_models import seg_infer_spec as infer_spec
from pipeline.inference.predict import predict
from pipeline.modeling.losses import ScheduledLoss, distance_loss
from pipeline.neighbours import balance
from pipeline.training import hard, subclasses
from pipeline.training.loop import Fitter, Task, fit_done
from pipeline.training.mean_teacher import MeanTeacher
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)

# Weight of the image-level BCE when the empty-mask classifier is a head on the segmentation
# encoder (classify.source: seg_head): small enough not to disturb the masks' loss.
SEG_HEAD_WEIGHT = 0.2


@dataclasses.dataclass
class FoldExtras:
    """What a fine-tuning round adds to a fold's plain training: pseudo-labelled samples
    (dataset, coverage) for the training part only, weights to start from, a mean
    teacher's consistency loss on unlabeled images; or, for a distilled student, soft targets
    (p x 255, by store position) in place of the training part's masks."""

    extra: tuple[torch.utils.data.Dataset, np.ndarray] | None = None
    init: Path | None = None
    teacher: MeanTeacher | None = None
    soft_masks: Mapping[int, np.ndarray] | None = None


def seg_task(cfg: SegmentCfg, model_predict, cls_weight: float = 0.0) -> Task:
    """Loss = scheduled segmentation loss + lambda x distance regression (+ image BCE for a
    classifier head); validation = mAP."""
    seg_loss = ScheduledLoss(cfg.train.loss, cfg.loss_mode)

    def loss(out, batch, epoch):
        total, parts = seg_loss(out["mask"], batch["mask"], epoch)
        if cfg.aux.weight > 0:
            d = distance_loss(out["dist"], batch["dist"], cfg.aux.signed)
            parts["dist"] = float(d.detach())
            total = total + cfg.aux.weight * d
        if cls_weight > 0:
            label = batch["label"]
            if label.dim() > out["cls"].dim():  # sub-classes of one class: the head says "any"
                label = label.amax(dim=1)
            c = torch.nn.functional.binary_cross_entropy_with_logits(out["cls"], label)
            parts["cls"] = float(c.detach())
            total = total + cls_weight * c
        return total, parts

    return Task(loss=loss, validate=model_predict, prepare=_progressive(cfg.train.progressive))


def _progressive(pcfg: ProgressiveCfg):
    """The batch transform of progressive resizing, or None when it is off."""
    if not pcfg.crop:
        return None

    def prepare(batch, epoch):
        if epoch >= pcfg.until_epoch:
            return batch
        # Each window from (epoch, the sample's global position), like the loader's other draws:
        # a resumed run, or one under torchrun, crops what an uninterrupted 1-process run cropped.
        return crop_batch(batch, pcfg.crop, [np.random.default_rng([epoch, p]) for p in batch["position"].tolist()])

    return prepare


def train_fold(cfg: Config, folder: Path, data: TrainSet, k: int, extras: FoldExtras | None = None) -> torch.nn.Module:
    """Train fold k into `folder` (resuming if interrupted) and return the final model."""
    scfg, extras = cfg.segment, extras or FoldExtras()
    device = pick_device(cfg.experiment)
    geometry = Geometry.from_cfg(scfg.input)
    seed = cfg.experiment.seed + k
    train_idx, val_idx = data.split(k, scfg.train.max_images, cfg.experiment.seed)
    runtime.seed_everything(seed)  # the model's random init must not depend on what ran before
    model = build_model(scfg, data.in_channels, cfg.classify.seg_head, data.k)
    if extras.init is not None:
        model.load_state_dict(torch.load(extras.init, map_location="cpu", weights_only=True))
    augment = build_augment(scfg.train.augment, seed)
    masks, classes = (
        (data.masks, data.k) if scfg.subclasses is None else (subclass_masks(scfg.subclasses, data, train_idx, seed), scfg.subclasses.n)
    )
    soft = extras.soft_masks is not None
    masks = extras.soft_masks if soft else masks
    images, masks = data.trained_on(scfg, train_idx, masks)
    ds = SegDataset(images, masks, train_idx, geometry, augment, scfg.aux.signed, seed, soft=soft, classes=classes)
    cov = data.coverage[train_idx]
    if extras.extra is not None:
        ds, cov = torch.utils.data.ConcatDataset([ds, extras.extra[0]]), np.concatenate([cov, extras.extra[1]])
    spec = infer_spec(scfg, device, ["none"])
    truths = data.truths(val_idx)

    def validate(m) -> dict[str, float]:
        return {"score": float(row_scores(m, data.seen(scfg), val_idx, spec, truths, scfg.train.eval_threshold).mean())}

    task = seg_task(scfg, validate, SEG_HEAD_WEIGHT if cfg.classify.seg_head else 0.0)
    if extras.teacher is not None:
        task = dataclasses.replace(task, hook=extras.teacher)
    if scfg.hard.enabled and fit_done(folder):  # a finished or reused fold (reuse copies no first/): no first round again
        model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
        return model
    weights = _weights(scfg, data, train_idx, cov)
    first = folder / "first" if scfg.hard.enabled else folder  # the hard round writes the fold's model.pt
    Fitter(model, task, scfg.train, first, device, seed).fit(ds, weights)
    model.load_state_dict(torch.load(first / "model.pt", map_location=device, weights_only=True))
    if scfg.hard.enabled:
        _hard_round(cfg, folder, model, task, (data, train_idx, ds, weights, spec), seed)
    return model


def row_scores(model: torch.nn.Module, images: ArrayStore, idx: np.ndarray, spec, truths: list[np.ndarray], threshold: float) -> np.ndarray:
    """Per-row metric (an image, or an (image, class) pair) of `model`'s maps of the images at
    store positions `idx` against their `truths`."""
    # A generator: score_probs keeps only the thresholded masks (1 byte a pixel, not 4).
    probs = (p for _, out in predict(model, images, idx, spec) for p in planes(out["mask"]))
    return score_probs(truths, probs, threshold)


def _hard_round(cfg: Config, folder: Path, model: torch.nn.Module, task: Task, part: tuple, seed: int) -> None:
    """segment.hard: fine-tune the fold's model with its hard training images drawn more often;
    `part`: the train set, the training part's positions, its dataset, first-round weights and
    the inference spec."""
    data, train_idx, ds, weights, spec = part
    scfg, device = cfg.segment, pick_device(cfg.experiment)
    saved, ids = folder / "first" / hard.DIFFICULTY_CSV, [data.images.ids[int(i)] for i in train_idx]
    if saved.exists():  # a resumed hard round: the difficulties its first run drew with
        hardness = fileio.read_csv(saved, dtype={"id": str}).set_index("id").loc[ids, "difficulty"].to_numpy()
    else:
        # Grown as in training (from the training part alone): no validation tile's pixels shape the weights.
        seen = data.trained_on(scfg, train_idx, data.masks)[0]
        scores = row_scores(model, seen, train_idx, spec, data.truths(train_idx), scfg.train.eval_threshold)
        hardness = hard.difficulty(scores, len(train_idx))
        fileio.write_csv(saved, pd.DataFrame({"id": ids, "difficulty": hardness}))
    logger.info(f"{folder.name}: hard round, mean difficulty {hardness.mean():.3f}, {int((hardness > 0.5).sum())} images above 0.5")
    seg, fit = hard.round_cfgs(scfg)
    loss = seg_task(seg, None, SEG_HEAD_WEIGHT if cfg.classify.seg_head else 0.0).loss
    Fitter(model, dataclasses.replace(task, loss=loss, prepare=None), fit, folder, device, seed + 500).fit(
        ds, hard.hard_weights(weights, hardness, scfg.hard.strength)
    )
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))


def _weights(scfg: SegmentCfg, data: TrainSet, train_idx: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Coverage-bin oversampling times the embed stage's balance weights (segment.balance) of
    the training part; extra (pseudo-labelled) images, after it, keep weight 1, the mean."""
    w = sample_weights(cov, scfg.train.oversample)
    bal = scfg.balance
    if bal.on:
        if data.traits is None:
            raise RuntimeError("segment.balance is on but the train set was opened without the embed stage")
        w[: len(train_idx)] *= balance.weights(data.traits, train_idx, bal.clusters, bal.test_likeness)
    return w


def subclass_masks(sub: SubclassesCfg, data: TrainSet, train_idx: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """The training part's masks split into sub-classes (packed, one bit each), by a split
    fitted on those masks alone: no validation mask shapes a training target."""
    images = [np.asarray(data.images[int(i)]) for i in train_idx]
    masks = [np.asarray(data.masks[int(i)])[..., 0] > 0 for i in train_idx]
    try:
        split = subclasses.fit(sub.by, sub.n, masks, images, seed)
    except ValueError as exc:
        raise UserError(f"segment.{exc}") from exc
    counts = np.zeros(sub.n + 1, np.int64)
    out = {}
    for i, mask, image in zip(train_idx, masks, images, strict=True):
        label = split.label(mask, image)
        counts += np.bincount(label.ravel(), minlength=sub.n + 1)
        out[int(i)] = pack(np.stack([label == c for c in range(1, sub.n + 1)]))[..., None]
    logger.info(f"sub-classes by {sub.by}: pixels per sub-class {counts[1:].tolist()}")
    return out


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
    out = roc_outputs(stage_dir, oof)
    if data.k > 1:
        out["class_auc"] = {c: round(safe_auc(g["label"].to_numpy(), g["prob"].to_numpy()), 4) for c, g in oof.groupby("class", sort=False)}
    return out


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

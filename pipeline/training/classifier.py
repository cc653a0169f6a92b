"""The empty-mask classifier, per fold: "this image's mask is non-empty", with dropout before
the head and an optional coverage-regression head; OOF and test probabilities.

Patch mode (images larger than the network input) trains on random patches labelled by
their own part of the mask; an image's probability aggregates its patches' outputs either
weighted by confidence |2p - 1| (a sure patch outweighs unsure ones, yet one confident
defect patch is not drowned by many confident-empty ones as in a plain mean) or by max."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from pipeline.config.classify import ClassifyCfg
from pipeline.config.schema import Config
from pipeline.core import distributed, runtime
from pipeline.core.runtime import pick_device
from pipeline.core.store import ArrayStore
from pipeline.data.classrows import cls_frame, read_rows
from pipeline.data.datasets import Geometry, SegDataset, build_augment, sample_weights
from pipeline.data.tables import fold_model_paths
from pipeline.evaluation.roc import safe_auc
from pipeline.inference.fold_models import classifier_paths, cls_test_probs, predict_probs
from pipeline.inference.fold_models import cls_geometry as geometry
from pipeline.inference.fold_models import cls_infer_spec as infer_spec
from pipeline.inference.predict import tile_grid
from pipeline.modeling.models import ClassifierNet
from pipeline.training.loop import Fitter
from pipeline.training.step import Task
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


def image_loss(name: str, labels: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The image-label loss `classify.loss` names: bce; weighted_bce, each class's positive term
    weighted by negatives/positives among `labels` (the training part's image labels, (n,) or
    (n, K)), so a class in 5% of the images is not learned as "always absent"; focal (gamma 2,
    torchvision's sigmoid_focal_loss, alpha off: the positive weighting is weighted_bce's job)."""
    if name == "focal":
        return lambda logits, target: sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0, reduction="mean")
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    pos = np.asarray(labels, dtype=float).reshape(len(labels), -1).mean(axis=0)
    weight = torch.tensor(np.clip((1 - pos) / np.maximum(pos, 1e-6), 1.0, 100.0), dtype=torch.float32)
    weight = weight.squeeze(0) if weight.numel() == 1 else weight

    def weighted(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=weight.to(logits.device))

    return weighted


def cls_task(cfg: ClassifyCfg, validate, labels: np.ndarray) -> Task:
    """Image-label loss (+ coverage_weight x coverage BCE); `labels` are the training part's."""
    image = image_loss(cfg.loss, labels)

    def loss(out, batch, epoch):
        cls_loss = image(out["cls"].float(), batch["label"])
        parts = {"cls": float(cls_loss.detach())}
        total = cls_loss
        if cfg.coverage_weight > 0:
            cov_loss = nn.functional.binary_cross_entropy_with_logits(out["cov"], batch["coverage"])
            parts["cov"] = float(cov_loss.detach())
            total = total + cfg.coverage_weight * cov_loss
        return total, parts

    return Task(loss=loss, validate=validate)


def train_fold(cfg: Config, folder: Path, data: TrainSet, k: int) -> pd.DataFrame | None:
    """Train fold k's classifier into `folder`; returns its OOF rows (id, fold, prob, label;
    for K classes one row per (image, class) with a class column), or None on a torchrun
    process other than rank 0 (rank 0 alone writes them)."""
    ccfg = cfg.classify
    device = pick_device(cfg.experiment)
    seed = cfg.experiment.seed + 100 + k
    train_idx, val_idx = data.split(k, ccfg.train.max_images, cfg.experiment.seed)
    runtime.seed_everything(seed)
    model = ClassifierNet(ccfg.model, data.in_channels, data.k)
    ds = SegDataset(data.images, data.masks, train_idx, geometry(ccfg), build_augment(ccfg.train.augment, seed), seed=seed, classes=data.k)
    labels = data.labels(val_idx)
    spec = infer_spec(ccfg, device, ["none"])

    def validate(m) -> dict[str, float]:
        return {"score": mean_auc(labels, predict_probs(m, data.images, val_idx, spec))}

    presence = None if data.presence is None else data.presence[train_idx]
    task = cls_task(ccfg, validate, data.labels(train_idx))
    Fitter(model, task, ccfg.train, folder, device, seed).fit(ds, sample_weights(data.coverage[train_idx], ccfg.train.oversample, presence))
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    if ccfg.patch.enabled and ccfg.patch.second_round_conf > 0:
        model = second_round(cfg, folder / "round2", model, data, (train_idx, seed), validate)
    if not distributed.is_main():
        return None
    probs = predict_probs(model, data.images, val_idx, infer_spec(ccfg, device, ccfg.train.tta))
    frame = cls_frame([data.images.ids[i] for i in val_idx], probs, data.classes)
    frame.insert(1, "fold", k)
    return frame.assign(label=labels.reshape(-1).astype(int))


def mean_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC, or for K classes the mean of the classes' AUCs (NaN ones left out)."""
    if labels.ndim == 1:
        return safe_auc(labels, probs)
    aucs = [safe_auc(labels[:, c], probs[:, c]) for c in range(labels.shape[1])]
    return float(np.nanmean(aucs)) if not np.all(np.isnan(aucs)) else float("nan")


def patch_grid(images: ArrayStore, indices: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every patch position (image index, (y, x)) of a sliding window over the images."""
    idx, yx = [], []
    for i in indices:
        h, w = images[int(i)].shape[:2]
        for y, x in tile_grid(h, w, size, stride):
            idx.append(int(i))
            yx.append((y, x))
    return np.array(idx, dtype=int), np.array(yx, dtype=int).reshape(-1, 2)


@torch.no_grad()
def patch_probs(model: nn.Module, ds: SegDataset, device: torch.device, tcfg) -> tuple[np.ndarray, np.ndarray]:
    """Classifier probability and truth label of every fixed patch of `ds`."""
    model.eval()
    probs, labels = [], []
    for batch in torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False):
        with runtime.autocast(device, tcfg):
            out = model(batch["image"].to(device))
        probs.append(torch.sigmoid(out["cls"].float()).cpu().numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(probs), np.concatenate(labels)


def second_round(cfg: Config, folder: Path, model: nn.Module, data: TrainSet, part: tuple[np.ndarray, int], validate) -> nn.Module:
    """Patch mode, round 2: fine-tune on the training patches (`part`: the training positions
    and the fold's seed) that round 1 classifies with confidence |2p - 1| >= second_round_conf
    (for K classes: in every class), dropping ambiguous patches (a defect cut by the patch
    border, label noise) that blur the decision boundary."""
    ccfg, (train_idx, seed) = cfg.classify, part
    device = pick_device(cfg.experiment)
    geom = Geometry("tile", ccfg.patch.size)
    idx, yx = patch_grid(data.images, train_idx, ccfg.patch.size, ccfg.patch.stride)
    # Under torchrun rank 0 scores the patches for all: every process must train on the same ones.
    probs, labels = distributed.on_main(
        lambda: patch_probs(model, SegDataset(data.images, data.masks, idx, geom, crops=yx, classes=data.k), device, ccfg.train)
    )
    conf = np.abs(2 * probs - 1).reshape(len(idx), -1).min(axis=1)
    keep = conf >= ccfg.patch.second_round_conf
    logger.info(f"{folder.parent.name} round 2: {int(keep.sum())} of {len(keep)} patches pass confidence {ccfg.patch.second_round_conf}")
    if keep.sum() < ccfg.train.batch_size:
        return model  # too few confident patches to fine-tune on: keep round 1
    augment = build_augment(ccfg.train.augment, seed + 1)
    ds = SegDataset(data.images, data.masks, idx[keep], geom, augment, seed=seed + 1, crops=yx[keep], classes=data.k)
    tcfg = dataclasses.replace(ccfg.train, epochs=max(1, ccfg.train.epochs // 2), swa_epochs=0, lr=ccfg.train.lr * 0.5)
    # Positive patches count as "small" coverage for the oversampling weights.
    positive = labels[keep].reshape(int(keep.sum()), -1).max(axis=1) > 0
    weights = sample_weights(np.where(positive, 0.05, 0.0), ccfg.train.oversample)
    Fitter(model, cls_task(ccfg, validate, labels[keep]), tcfg, folder, device, seed + 1).fit(ds, weights)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model


def load_oof(folder: Path) -> pd.DataFrame | None:
    """OOF classifier probabilities (id, fold, prob, label), or None when disabled."""
    path = folder / "oof_cls.csv"
    return read_rows(path) if path.exists() else None


def predict_test(cfg: Config, folder: Path, test_images: ArrayStore, adabn: bool = False, folds: list[int] | None = None) -> np.ndarray:
    """Test probabilities averaged over the fold classifiers (or those of `folds`; NaN when
    disabled); `adabn` re-estimates BatchNorm statistics on the test images first."""
    return cls_test_probs(cfg, classifier_paths(fold_model_paths(folder, folds)), test_images, adabn)

"""Classifier gating stage: per fold, "this image's mask is non-empty", with dropout before
the head and an optional coverage-regression head; OOF probabilities and ROC/AUC.

Patch mode (images larger than the network input) trains on random patches labelled by
their own part of the mask; an image's probability aggregates its patches' outputs either
weighted by confidence |2p - 1| (a sure patch outweighs unsure ones, yet one confident
defect patch is not drowned by many confident-empty ones as in a plain mean) or by max."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline import runtime
from pipeline.cache import Context
from pipeline.datasets import Geometry, SegDataset, build_augment, sample_weights
from pipeline.models import ClassifierNet
from pipeline.predict import adapt_bn, predict
from pipeline.roc import roc_outputs, safe_auc
from pipeline.runtime import pick_device
from pipeline.schema import ClassifyCfg, Config, InputCfg
from pipeline.stages.folds import load_folds
from pipeline.stages.segment import fold_indices, folds_to_run, open_train
from pipeline.store import ArrayStore
from pipeline.train import Fitter, Task


def geometry(cfg: ClassifyCfg) -> Geometry:
    """Patch mode is tile geometry at the patch size."""
    if cfg.patch.enabled:
        return Geometry.from_cfg(InputCfg("tile", cfg.patch.size, cfg.patch.size - cfg.patch.stride))
    return Geometry.from_cfg(cfg.input)


def overlap(cfg: ClassifyCfg) -> int:
    return cfg.patch.size - cfg.patch.stride if cfg.patch.enabled else 0


def predict_probs(cfg: ClassifyCfg, model: nn.Module, images: ArrayStore, indices: np.ndarray, device, tta: list[str]) -> np.ndarray:
    """Image-level probabilities (patch outputs aggregated as configured)."""
    agg = cfg.patch.aggregate if cfg.patch.enabled else "weighted"
    out = predict(model, images, indices, geometry(cfg), tta, device, cfg.train, overlap=overlap(cfg), aggregate=agg)
    return np.array([o["cls"] for _, o in out], dtype=np.float64)


def cls_task(cfg: ClassifyCfg, validate) -> Task:
    bce = nn.BCEWithLogitsLoss()

    def loss(out, batch, epoch):
        cls_loss = bce(out["cls"], batch["label"])
        parts = {"cls": float(cls_loss.detach())}
        total = cls_loss
        if cfg.coverage_weight > 0:
            cov_loss = nn.functional.binary_cross_entropy_with_logits(out["cov"], batch["coverage"])
            parts["cov"] = float(cov_loss.detach())
            total = total + cfg.coverage_weight * cov_loss
        return total, parts

    return Task(loss=loss, validate=validate)


def train_fold(cfg: Config, folder: Path, images, masks, coverage, train_idx, val_idx, k: int, log=print) -> tuple[nn.Module, np.ndarray]:
    """Train fold k's classifier; returns the model and its OOF probabilities (with TTA)."""
    ccfg = cfg.classify
    device = pick_device(cfg.experiment)
    seed = cfg.experiment.seed + 100 + k
    runtime.seed_everything(seed)
    model = ClassifierNet(ccfg.model, images[0].shape[2])
    ds = SegDataset(images, masks, train_idx, geometry(ccfg), build_augment(ccfg.train.augment, seed), seed=seed)
    labels = coverage[val_idx] > 0

    def validate(m) -> dict[str, float]:
        p = predict_probs(ccfg, m, images, val_idx, device, ["none"])
        return {"score": safe_auc(labels, p)}

    Fitter(model, cls_task(ccfg, validate), ccfg.train, folder, device, seed, log).fit(
        ds, sample_weights(coverage[train_idx], ccfg.train.oversample)
    )
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    if ccfg.patch.enabled and ccfg.patch.second_round_conf > 0:
        model = second_round(cfg, folder / "round2", model, images, masks, train_idx, device, seed, validate, log)
    return model, predict_probs(ccfg, model, images, val_idx, device, ccfg.train.tta)


def patch_grid(images: ArrayStore, indices: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Every patch position (image index, (y, x)) of a sliding window over the images."""
    idx, yx = [], []
    for i in indices:
        h, w = images[int(i)].shape[:2]
        for y in sorted({*range(0, max(h - size, 0) + 1, stride), max(h - size, 0)}):
            for x in sorted({*range(0, max(w - size, 0) + 1, stride), max(w - size, 0)}):
                idx.append(int(i))
                yx.append((y, x))
    return np.array(idx, dtype=int), np.array(yx, dtype=int).reshape(-1, 2)


@torch.no_grad()
def patch_probs(model: nn.Module, ds: SegDataset, device, tcfg) -> tuple[np.ndarray, np.ndarray]:
    """Classifier probability and truth label of every fixed patch of `ds`."""
    model.eval()
    probs, labels = [], []
    for batch in torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False):
        with runtime.autocast(device, tcfg):
            out = model(batch["image"].to(device))
        probs.append(torch.sigmoid(out["cls"].float()).cpu().numpy())
        labels.append(batch["label"].numpy())
    return np.concatenate(probs), np.concatenate(labels)


def second_round(
    cfg: Config, folder: Path, model: nn.Module, images, masks, train_idx, device, seed: int, validate, log=print
) -> nn.Module:
    """Patch mode, round 2: fine-tune on the training patches that round 1 classifies with
    confidence |2p - 1| >= patch.second_round_conf, dropping ambiguous patches (a defect
    cut by the patch border, label noise) that blur the decision boundary."""
    ccfg = cfg.classify
    geometry = Geometry("tile", ccfg.patch.size)
    idx, yx = patch_grid(images, train_idx, ccfg.patch.size, ccfg.patch.stride)
    probs, labels = patch_probs(model, SegDataset(images, masks, idx, geometry, crops=yx), device, ccfg.train)
    keep = np.abs(2 * probs - 1) >= ccfg.patch.second_round_conf
    log(f"{folder.parent.name} round 2: {int(keep.sum())} of {len(keep)} patches pass confidence {ccfg.patch.second_round_conf}")
    if keep.sum() < ccfg.train.batch_size:
        return model  # too few confident patches to fine-tune on: keep round 1
    ds = SegDataset(images, masks, idx[keep], geometry, build_augment(ccfg.train.augment, seed + 1), seed=seed + 1, crops=yx[keep])
    tcfg = dataclasses.replace(ccfg.train, epochs=max(1, ccfg.train.epochs // 2), swa_epochs=0, lr=ccfg.train.lr * 0.5)
    # Positive patches count as "small" coverage for the oversampling weights.
    weights = sample_weights(np.where(labels[keep] > 0, 0.05, 0.0), ccfg.train.oversample)
    Fitter(model, cls_task(ccfg, validate), tcfg, folder, device, seed + 1, log).fit(ds, weights)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ctx.dir.mkdir(parents=True, exist_ok=True)
    images, masks, table = open_train(ctx.upstream["ingest"])
    folds = load_folds(ctx.upstream["folds"])
    if not cfg.classify.enabled:
        return {"enabled": False}
    if cfg.classify.source == "seg_head":
        return {"enabled": True, "source": "seg_head (trained with the segment stage)"}
    coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
    parts = []
    for k in folds_to_run(cfg.classify.train.folds, folds):
        train_idx, val_idx = fold_indices(images, folds, k, cfg.classify.train.max_images, cfg.experiment.seed)
        _, probs = train_fold(cfg, ctx.dir / f"fold{k}", images, masks, coverage, train_idx, val_idx, k, ctx.log)
        parts.append(
            pd.DataFrame({"id": [images.ids[i] for i in val_idx], "fold": k, "prob": probs, "label": (coverage[val_idx] > 0).astype(int)})
        )
    oof = pd.concat(parts).set_index("id").loc[[i for i in images.ids if i in set(pd.concat(parts)["id"])]].reset_index()
    tmp = ctx.dir / f".oof_cls.csv.tmp{os.getpid()}"
    oof.to_csv(tmp, index=False)
    os.replace(tmp, ctx.dir / "oof_cls.csv")
    return {"enabled": True, **roc_outputs(ctx.dir, oof)}


def load_oof(folder: Path) -> pd.DataFrame | None:
    """OOF classifier probabilities (id, fold, prob, label), or None when disabled."""
    path = folder / "oof_cls.csv"
    return pd.read_csv(path, dtype={"id": str}) if path.exists() else None


def predict_test(cfg: Config, folder: Path, test_images: ArrayStore, adabn: bool = False) -> np.ndarray:
    """Test probabilities averaged over the fold classifiers (NaN when disabled); `adabn`
    re-estimates BatchNorm statistics on the test images first."""
    # A fold's final model is its round-2 fine-tune when patch.second_round_conf made one.
    paths = [
        p.parent / "round2" / "model.pt" if (p.parent / "round2" / "model.pt").exists() else p
        for p in sorted(folder.glob("fold*/model.pt"))
    ]
    if not cfg.classify.enabled or not paths:
        return np.full(len(test_images), np.nan)
    device = pick_device(cfg.experiment)
    total = np.zeros(len(test_images))
    for path in paths:
        model = ClassifierNet(cfg.classify.model, test_images[0].shape[2])
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if adabn:
            model = adapt_bn(model, test_images, geometry(cfg.classify), device, overlap(cfg.classify))
        total += predict_probs(cfg.classify, model, test_images, np.arange(len(test_images)), device, cfg.classify.train.tta)
    return total / len(paths)

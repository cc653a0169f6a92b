"""Segmentation stage: per fold, an smp model with an optional distance-map head, trained
by the shared loop; out-of-fold probability and distance maps for every train image."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from pipeline import reuse, runtime
from pipeline.cache import Context
from pipeline.datasets import Geometry, SegDataset, build_augment, sample_weights
from pipeline.evaluation import score_probs
from pipeline.losses import ScheduledLoss, distance_loss
from pipeline.mean_teacher import MeanTeacher
from pipeline.models import build_segmentation
from pipeline.predict import adapt_bn, dequantise, predict, save_maps
from pipeline.roc import roc_outputs
from pipeline.runtime import pick_device
from pipeline.schema import Config, SegmentCfg
from pipeline.stages.folds import load_folds
from pipeline.store import ArrayStore, write_store
from pipeline.train import Fitter, Task


def open_train(ingest_dir: Path) -> tuple[ArrayStore, ArrayStore, pd.DataFrame]:
    """Images, masks and the train table of an ingest artifact."""
    table = pd.read_csv(ingest_dir / "train.csv", dtype={"id": str}, keep_default_na=False)
    return ArrayStore(ingest_dir, "images"), ArrayStore(ingest_dir, "masks"), table


def fold_indices(images: ArrayStore, folds: pd.DataFrame, k: int, max_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Store positions of the training part and the validation fold k."""
    pos = np.array([images.position(i) for i in folds["id"]])
    train, val = pos[folds["fold"].to_numpy() != k], pos[folds["fold"].to_numpy() == k]
    if max_images and len(train) > max_images:
        train = np.sort(np.random.default_rng(seed).choice(train, max_images, replace=False))
    return train, val


def folds_to_run(cfg_folds: list[int], folds: pd.DataFrame) -> list[int]:
    return cfg_folds or sorted(folds["fold"].unique().tolist())


# Weight of the image-level BCE when the empty-mask classifier is a head on the segmentation
# encoder (classify.source: seg_head): small enough not to disturb the masks' loss.
SEG_HEAD_WEIGHT = 0.2


class TestMaps(NamedTuple):
    masks: list[np.ndarray]
    dists: list[np.ndarray] | None
    cls: np.ndarray | None  # image probabilities from the seg_head classifier


def seg_head(cfg: Config) -> bool:
    """Whether the empty-mask classifier rides on the segmentation encoder."""
    return cfg.classify.enabled and cfg.classify.source == "seg_head"


def build_model(cfg: SegmentCfg, in_channels: int, cls_head: bool = False):
    return build_segmentation(cfg.model, in_channels, aux=cfg.aux.weight > 0, cls_head=cls_head)


def seg_task(cfg: SegmentCfg, model_predict, cls_weight: float = 0.0) -> Task:
    """Loss = scheduled segmentation loss + lambda x distance regression (+ image BCE for a
    classifier head); validation = mAP."""
    seg_loss = ScheduledLoss(cfg.train.loss)

    def loss(out, batch, epoch):
        total, parts = seg_loss(out["mask"], batch["mask"], epoch)
        if cfg.aux.weight > 0:
            d = distance_loss(out["dist"], batch["dist"], cfg.aux.signed)
            parts["dist"] = float(d.detach())
            total = total + cfg.aux.weight * d
        if cls_weight > 0:
            c = torch.nn.functional.binary_cross_entropy_with_logits(out["cls"], batch["label"])
            parts["cls"] = float(c.detach())
            total = total + cls_weight * c
        return total, parts

    return Task(loss=loss, validate=model_predict)


def train_fold(
    cfg: Config,
    folder: Path,
    images: ArrayStore,
    masks: ArrayStore,
    coverage: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    k: int,
    log=print,
    extra: tuple[torch.utils.data.Dataset, np.ndarray] | None = None,
    init: Path | None = None,
    teacher: MeanTeacher | None = None,
) -> torch.nn.Module:
    """Train fold k (resuming if interrupted) and return the final model.

    `extra` adds (dataset, coverage) samples to the training part only (pseudo-labels);
    `init` starts from saved weights instead of the encoder's pretrained ones; `teacher` adds
    its consistency loss on unlabeled images (mean teacher)."""
    scfg = cfg.segment
    device = pick_device(cfg.experiment)
    geometry = Geometry.from_cfg(scfg.input)
    seed = cfg.experiment.seed + k
    runtime.seed_everything(seed)  # the model's random init must not depend on what ran before
    model = build_model(scfg, images[0].shape[2], seg_head(cfg))
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    ds = SegDataset(images, masks, train_idx, geometry, build_augment(scfg.train.augment, seed), scfg.aux.signed, seed)
    cov = coverage[train_idx]
    if extra is not None:
        ds, cov = torch.utils.data.ConcatDataset([ds, extra[0]]), np.concatenate([cov, extra[1]])
    weights = sample_weights(cov, scfg.train.oversample)

    def validate(m) -> dict[str, float]:
        preds = predict(m, images, val_idx, geometry, ["none"], device, scfg.train, scfg.aux.signed, scfg.input.tile_overlap)
        probs = [out["mask"] for _, out in preds]
        return {"score": float(score_probs([masks[i][..., 0] for i in val_idx], probs, scfg.train.eval_threshold).mean())}

    task = seg_task(scfg, validate, SEG_HEAD_WEIGHT if seg_head(cfg) else 0.0)
    if teacher is not None:
        task = dataclasses.replace(task, hook=teacher)
    fitter = Fitter(model, task, scfg.train, folder, device, seed, log)
    fitter.fit(ds, weights)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model


def predict_oof(cfg: Config, model, images: ArrayStore, val_idx: np.ndarray, folder: Path) -> None:
    """OOF maps of fold k with TTA, stored quantised in the fold folder."""
    scfg = cfg.segment
    if (folder / "oof.index.csv").exists():
        return
    out = list(
        predict(
            model,
            images,
            val_idx,
            Geometry.from_cfg(scfg.input),
            scfg.train.tta,
            pick_device(cfg.experiment),
            scfg.train,
            scfg.aux.signed,
            scfg.input.tile_overlap,
        )
    )
    ids = [images.ids[i] for i, _ in out]
    if "cls" in out[0][1]:
        pd.DataFrame({"id": ids, "prob": [o["cls"] for _, o in out]}).to_csv(folder / "oof_cls.csv", index=False)
    if scfg.aux.weight > 0:
        save_maps(folder, "oof_dist", ids, [o["dist"] for _, o in out])
    save_maps(folder, "oof", ids, [o["mask"] for _, o in out])


def merge_oof(stage_dir: Path, fold_dirs: list[Path], names: tuple[str, ...], order: list[str]) -> None:
    """Fold OOF stores -> one store per name in train order (each id exactly once)."""
    for name in names:
        parts = [ArrayStore(d, name) for d in fold_dirs if (d / f"{name}.index.csv").exists()]
        if not parts:
            continue
        where = {i: p for p in parts for i in p.ids}
        write_store(stage_dir, name, ((i, np.asarray(where[i].get(i))) for i in order if i in where))


def oof_scores(stage_dir: Path, masks: ArrayStore, folds: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    """Per-image OOF metric (TGS mAP and Dice) at a pixel threshold."""
    oof = ArrayStore(stage_dir, "oof")
    probs = [dequantise(oof[i][..., 0]) for i in range(len(oof))]
    truths = [masks.get(i)[..., 0] for i in oof.ids]
    fold_of = dict(zip(folds["id"], folds["fold"], strict=True))
    return pd.DataFrame(
        {
            "id": oof.ids,
            "fold": [fold_of[i] for i in oof.ids],
            "tgs": score_probs(truths, probs, threshold, "tgs"),
            "dice": score_probs(truths, probs, threshold, "dice"),
        }
    )


def _merge_cls(stage_dir: Path, fold_dirs: list[Path], folds: pd.DataFrame, coverage: np.ndarray, images: ArrayStore) -> dict:
    """The seg_head classifier's OOF probabilities (as the classify stage writes them) and ROC."""
    oof = pd.concat([pd.read_csv(d / "oof_cls.csv", dtype={"id": str}) for d in fold_dirs])
    oof["fold"] = oof["id"].map(dict(zip(folds["id"], folds["fold"], strict=True)))
    oof["label"] = (oof["id"].map(dict(zip(images.ids, coverage, strict=True))) > 0).astype(int)
    oof.to_csv(stage_dir / "oof_cls.csv", index=False)
    return roc_outputs(stage_dir, oof)


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    images, masks, table = open_train(ctx.upstream["ingest"])
    folds = load_folds(ctx.upstream["folds"])
    coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fold_dirs, reused = [], {}
    for k in folds_to_run(cfg.segment.train.folds, folds):
        folder = ctx.dir / f"fold{k}"
        train_key = reuse.fold_train_key(ctx.material, "segment", k)
        source = reuse.reuse_fold(ctx, folder, train_key)
        if source is not None:
            reused[folder.name] = source.parent.name
            ctx.log(f"fold{k}: model reused from {source.parent.name} (same training, other prediction settings)")
        train_idx, val_idx = fold_indices(images, folds, k, cfg.segment.train.max_images, cfg.experiment.seed)
        model = train_fold(cfg, folder, images, masks, coverage, train_idx, val_idx, k, ctx.log)
        reuse.mark_trained(folder, train_key)
        predict_oof(cfg, model, images, val_idx, folder)
        fold_dirs.append(folder)
    merge_oof(ctx.dir, fold_dirs, ("oof", "oof_dist"), images.ids)
    scores = oof_scores(ctx.dir, masks, folds, cfg.segment.train.eval_threshold)
    scores.to_csv(ctx.dir / "oof_scores.csv", index=False)
    fits = {d.name: json.loads((d / "fit.json").read_text()) for d in fold_dirs}
    head = _merge_cls(ctx.dir, fold_dirs, folds, coverage, images) if seg_head(cfg) else {}
    return (
        head
        | {
            "oof_tgs": round(float(scores["tgs"].mean()), 4),
            "oof_dice": round(float(scores["dice"].mean()), 4),
            "fold_tgs": {f"fold{k}": round(float(v), 4) for k, v in scores.groupby("fold")["tgs"].mean().items()},
            "fits": fits,
            "n_oof": len(scores),
        }
        | ({"reused_folds": reused} if reused else {})
    )


def predict_test(cfg: Config, model_dir: Path, test_images: ArrayStore, adabn: bool = False) -> TestMaps:
    """Test probability (and distance) maps: every fold model of `model_dir`, with TTA,
    averaged, at each image's original size; `adabn` re-estimates BatchNorm statistics on the
    test images first."""
    scfg = cfg.segment
    device = pick_device(cfg.experiment)
    geometry = Geometry.from_cfg(scfg.input)
    paths = sorted(model_dir.glob("fold*/model.pt"))
    if not paths:
        raise FileNotFoundError(f"no fold models under {model_dir}")
    masks: list[np.ndarray] | None = None
    dists: list[np.ndarray] | None = None
    cls = np.zeros(len(test_images)) if seg_head(cfg) else None
    for path in paths:
        model = build_model(scfg, test_images[0].shape[2], seg_head(cfg))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        if adabn:
            model = adapt_bn(model, test_images, geometry, device, scfg.input.tile_overlap)
        outs = [
            o
            for _, o in predict(
                model,
                test_images,
                np.arange(len(test_images)),
                geometry,
                scfg.train.tta,
                device,
                scfg.train,
                scfg.aux.signed,
                scfg.input.tile_overlap,
            )
        ]
        m = [o["mask"] / len(paths) for o in outs]
        masks = m if masks is None else [a + b for a, b in zip(masks, m, strict=True)]
        if "dist" in outs[0]:
            d = [o["dist"] / len(paths) for o in outs]
            dists = d if dists is None else [a + b for a, b in zip(dists, d, strict=True)]
        if cls is not None:
            cls += np.array([o["cls"] for o in outs]) / len(paths)
    return TestMaps(masks, dists, cls)

"""The segmentation task that a fold trains with: the scheduled loss plus the distance head's
regression (and the image head's BCE), progressive crops as its batch transform, and the
per-row scores of a model's maps that validation and the hard round read."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.config.blocks import ProgressiveCfg
from pipeline.config.segment import SegmentCfg
from pipeline.core.store import ArrayStore
from pipeline.data.classrows import planes
from pipeline.data.datasets import crop_batch
from pipeline.evaluation.oof import score_probs
from pipeline.inference.predict import predict
from pipeline.modeling.losses import ScheduledLoss, distance_loss
from pipeline.training.step import Task

# Weight of the image-level BCE when the empty-mask classifier is a head on the segmentation
# encoder (classify.source: seg_head): small enough not to disturb the masks' loss.
SEG_HEAD_WEIGHT = 0.2


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


def row_scores(model: torch.nn.Module, images: ArrayStore, idx: np.ndarray, spec, truths: list[np.ndarray], threshold: float) -> np.ndarray:
    """Per-row metric (an image, or an (image, class) pair) of `model`'s maps of the images at
    store positions `idx` against their `truths`."""
    # A generator: score_probs keeps only the thresholded masks (1 byte a pixel, not 4).
    probs = (p for _, out in predict(model, images, idx, spec) for p in planes(out["mask"]))
    return score_probs(truths, probs, threshold)

"""Pseudo-labels: which test images are confident enough to label, their labels (hard or
soft) as a store, and the fine-tuning schedule of a pseudo round.

A test map is (h, w) for one binary class and (h, w, K) for K classes. A hard K-class label is
packed like a training mask (bit k = class k, pipeline.data.multiclass), so the training dataset
reads it as it reads the train masks; a soft one keeps its K planes, p x 255 each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipeline.config.blocks import ProgressiveCfg
from pipeline.config.schema import Config
from pipeline.config.teachers import PseudoCfg
from pipeline.core.store import ArrayStore, quantise, write_store
from pipeline.data.multiclass import pack

LABELS = "pseudo_masks"  # the store of a fold's pseudo-labels in its round folder


def select(cfg: PseudoCfg, probs: list[np.ndarray], cls_probs: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
    """Indices of confident test images, most confident first (capped by max_images). The
    pixel share counts every class plane; with K image probabilities per image (a per-class
    head), each of them must be confident. With `predicted` scores (pseudo.score_select) an
    image must also reach score_select.min_score, and the best predicted come first."""
    share = np.array([np.mean((p < cfg.pixel_lo) | (p > cfg.pixel_hi)) for p in probs])
    ok = share >= cfg.min_confident_share
    cls = np.asarray(cls_probs, dtype=float).reshape(len(probs), -1)
    if not np.isnan(cls).all():
        ok &= ((cls <= cfg.prob_lo) | (cls >= cfg.prob_hi)).all(axis=1)
    rank = share
    if predicted is not None:
        ok &= predicted >= cfg.score_select.min_score
        rank = predicted
    chosen = np.flatnonzero(ok)
    # Ties (a predictor that learnt little predicts one value for many images) go to the more
    # confident, not to the store order.
    chosen = chosen[np.lexsort((-share[chosen], -rank[chosen]))]
    return chosen[: cfg.max_images] if cfg.max_images else chosen


def _label(prob: np.ndarray, soft: bool) -> np.ndarray:
    if soft:
        return quantise(prob)
    if prob.ndim == 3:  # K classes: packed, bit k = class k above 0.5
        return pack(np.moveaxis(prob > 0.5, -1, 0))
    return (prob > 0.5).astype(np.uint8)


def write_labels(folder: Path, ids: list[str], probs: list[np.ndarray], soft: bool) -> ArrayStore:
    """Pseudo masks as a store: p x 255 when soft (a plane per class), 0/1 (packed class bits
    for K classes) when hard."""
    write_store(folder, LABELS, zip(ids, (_label(p, soft) for p in probs), strict=True))
    return ArrayStore(folder, LABELS)


def label_coverage(labels: ArrayStore, ids: list[str], soft: bool) -> np.ndarray:
    """Foreground (any class) share of each pseudo mask (soft labels count above 0.5)."""
    return np.array([float((labels.get(i) > (127 if soft else 0)).any(axis=-1).mean()) for i in ids])


def round_cfg(cfg: Config) -> Config:
    """Fine-tuning schedule: pseudo.epochs epochs of the segment training recipe."""
    train = cfg.segment.train
    swa = min(train.swa_epochs, max(cfg.pseudo.epochs - 1, 0))
    phases = [dataclasses.replace(train.loss[-1], until_epoch=0)]  # the final loss phase only
    # Fine-tune at the SWA learning rate: the full lr undoes what the last epochs and SWA gained.
    # No progressive crops: fine-tuning is the end of training, which runs on whole inputs.
    off = ProgressiveCfg(crop=0, until_epoch=0)
    new_train = dataclasses.replace(train, epochs=cfg.pseudo.epochs, swa_epochs=swa, loss=phases, lr=train.swa_lr, progressive=off)
    return dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, train=new_train))


class Reindexed:
    """A view of a store restricted to some positions, so pseudo labels index 0..n-1."""

    def __init__(self, store: ArrayStore, positions: np.ndarray) -> None:
        self.store, self.positions = store, positions

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store[int(self.positions[i])]

    def __len__(self) -> int:
        return len(self.positions)

"""Option segment.subclasses: the seed's sub-class trick. One binary class is split into K
training classes (by size, location or texture: pipeline/training/subclasses.py) that the
network learns as channels and that inference merges back into one map."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from pipeline.config.segment import SubclassesCfg
from pipeline.core.errors import UserError
from pipeline.data.multiclass import pack
from pipeline.training import subclasses
from pipeline.training.options.base import Fold, Option
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SubClasses(Option):
    """The training part's masks as sub-class masks, split by a fit on that part alone."""

    cfg: SubclassesCfg

    def targets(self, fold: Fold) -> None:
        fold.masks, fold.classes = subclass_masks(self.cfg, fold.data, fold.train_idx, fold.seed), self.cfg.n


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

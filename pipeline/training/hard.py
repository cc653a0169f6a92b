"""Easy / hard labelling for a second training round (segment.hard): after a fold's model has
trained, each training image's difficulty is 1 - its own score under that model, and a short
fine-tuning round draws the hard ones more often.

The scores are in-sample (the model predicts the images it trained on), so they read the
training part's masks alone; the fold's validation images are neither scored nor weighted. An
OOF score would be the wrong source here: a training image's OOF map comes from a model that
trained on this fold's validation images.

The difficulties are saved beside the first round's model (`first/difficulty.csv`), and a
resumed hard round reads them back. Not yet: a mean teacher's state is rebuilt when a run
resumes between the two rounds (an uninterrupted run continues it).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.config.blocks import FitCfg, ProgressiveCfg
from pipeline.config.segment import SegmentCfg

DIFFICULTY_CSV = "difficulty.csv"  # id, difficulty of the training part (in the fold's first/)


def difficulty(row_scores: np.ndarray, n_images: int) -> np.ndarray:
    """1 - each image's score (the mean over its class rows) from its per-row scores under the
    first round's model (pipeline.training.segmentation.row_scores)."""
    return 1.0 - row_scores.reshape(n_images, -1).mean(axis=1)


def hard_weights(weights: np.ndarray, hardness: np.ndarray, strength: float) -> np.ndarray:
    """The first round's sampling weights times 1 + strength x difficulty (the training part
    first; extra images after it keep theirs)."""
    out = weights.astype(np.float64).copy()
    out[: len(hardness)] *= 1.0 + strength * hardness
    return out


def round_cfgs(scfg: SegmentCfg) -> tuple[SegmentCfg, FitCfg]:
    """The segment section the hard round's loss reads and its fit: its epochs count from 0
    again, so it keeps the first round's last loss phase alone and no progressive crops;
    `segment.hard.epochs` at the SWA learning rate, no SWA, from the first round's model."""
    last = dataclasses.replace(scfg.train.loss[-1], until_epoch=0, lr_scale=1.0)
    train = dataclasses.replace(scfg.train, loss=[last], progressive=ProgressiveCfg(crop=0, until_epoch=0))
    fit = dataclasses.replace(train, epochs=scfg.hard.epochs, swa_epochs=0, lr=scfg.train.swa_lr)
    return dataclasses.replace(scfg, train=train), fit

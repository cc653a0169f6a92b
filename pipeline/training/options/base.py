"""The interface of a training option: one fold's training, as a `Fold` the options shape hook
by hook, in the spirit of Lightning's or fastai's callbacks. The fold trainer
(pipeline/training/segmentation.py) builds the fold in a fixed order and calls each hook of
every option at its place; an option overrides only the hooks it needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config.schema import Config
from pipeline.inference.predict import InferSpec
from pipeline.training.step import Task
from pipeline.training.trainset import TrainSet


@dataclass
class Fold:
    """One fold's training as the options shape it: what it trains on (masks, classes, the
    images as the model sees them, the dataset and each sample's coverage), how (the task, the
    sampling weights) and where the first fit writes."""

    cfg: Config
    data: TrainSet
    k: int
    folder: Path
    seed: int
    device: torch.device
    train_idx: np.ndarray
    val_idx: np.ndarray
    masks: Any  # the training targets by store position: the ingest's masks, sub-class masks, soft maps
    classes: int
    fit_dir: Path  # where the first fit writes its model.pt
    soft: bool = False
    images: Any = None
    dataset: torch.utils.data.Dataset | None = None
    coverage: np.ndarray | None = None
    spec: InferSpec | None = None  # how validation and in-sample scoring predict
    task: Task | None = None
    weights: np.ndarray | None = None


class Option:
    """A training option. The hooks, in the order the fold trainer calls them:
    start (the model's starting weights, where the fit writes), targets (the masks and classes),
    views (the images and masks as the model sees them), samples (more training samples), task
    (the loss, validation and step hooks), finished (True: the fold is trained already, skip the
    fit), weights (the sampler's weights), after (more rounds once the first fit is done)."""

    def start(self, fold: Fold, model: torch.nn.Module) -> None:
        pass

    def targets(self, fold: Fold) -> None:
        pass

    def views(self, fold: Fold) -> None:
        pass

    def samples(self, fold: Fold) -> None:
        pass

    def task(self, fold: Fold) -> None:
        pass

    def finished(self, fold: Fold, model: torch.nn.Module) -> bool:
        return False

    def weights(self, fold: Fold) -> None:
        pass

    def after(self, fold: Fold, model: torch.nn.Module) -> None:
        pass

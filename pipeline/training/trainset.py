"""The labelled training set as the training stages see it: the ingest stores, each image's
coverage and the fold table, travelling together as one object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config.segment import SegmentCfg
from pipeline.core.store import ArrayStore
from pipeline.data.classrows import truth_planes
from pipeline.data.tables import class_presence, folds_to_run, load_folds, open_train, train_classes
from pipeline.neighbours.balance import ImageTraits
from pipeline.neighbours.mosaic_context import Mosaic, for_model


@dataclass(frozen=True)
class TrainSet:
    """Images, masks, coverage (per store position) and folds of one ingest + folds artifact."""

    images: ArrayStore
    masks: ArrayStore
    coverage: np.ndarray
    folds: pd.DataFrame
    classes: tuple[str, ...] = ()  # K > 1 class names (empty: one binary class)
    traits: ImageTraits | None = None  # embedding clusters and test-likeness (segment.balance)
    mosaic: Mosaic | None = None  # each tile's touching neighbours (segment.context)
    presence: np.ndarray | None = None  # K classes: (n, K) bool, class k in image i (per store position)

    @classmethod
    def open(cls, ingest_dir: Path, folds_dir: Path, embed_dir: Path | None = None, mosaic_dir: Path | None = None) -> TrainSet:
        """The train set of an ingest and a folds artifact; with `embed_dir`, each image's
        cluster and test-likeness as well; with `mosaic_dir`, each tile's neighbours."""
        images, masks, table = open_train(ingest_dir)
        coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
        traits = ImageTraits.read(embed_dir, list(images.ids)) if embed_dir is not None else None
        mosaic = Mosaic.open(mosaic_dir, images) if mosaic_dir is not None else None
        classes = train_classes(ingest_dir)
        presence = class_presence(table.set_index("id").loc[list(images.ids)], classes) if classes else None
        return cls(images, masks, coverage, load_folds(folds_dir), classes, traits, mosaic, presence)

    def labels(self, positions: np.ndarray) -> np.ndarray:
        """Image labels at store positions: non-empty (n,), or each class present (n, K)."""
        if self.presence is None:
            return (self.coverage[positions] > 0).astype(float)
        return self.presence[positions].astype(float)

    def seen(self, scfg: SegmentCfg):
        """The images as a model of `scfg` predicts them (grown with any neighbour's pixels
        when it trains with context)."""
        return for_model(self.images, scfg, self.mosaic)

    def trained_on(self, scfg: SegmentCfg, train_idx: np.ndarray, masks) -> tuple:
        """(images, masks) of a training part: grown alike, from neighbours in the part alone,
        whose masks the fold trains on anyway."""
        allowed = {self.images.ids[int(i)] for i in train_idx}
        return for_model(self.images, scfg, self.mosaic, allowed), for_model(masks, scfg, self.mosaic, allowed, [masks])

    @property
    def in_channels(self) -> int:
        return int(self.images[0].shape[2])

    @property
    def k(self) -> int:
        """The number of foreground classes (1 for a binary task)."""
        return max(len(self.classes), 1)

    def fold_ids(self, cfg_folds: list[int]) -> list[int]:
        return folds_to_run(cfg_folds, self.folds)

    def split(self, k: int, max_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Store positions of the training part and of validation fold k (the training part
        subsampled to `max_images` when set)."""
        pos = np.array([self.images.position(i) for i in self.folds["id"]])
        fold = self.folds["fold"].to_numpy()
        train, val = pos[fold != k], pos[fold == k]
        if max_images and len(train) > max_images:
            train = np.sort(np.random.default_rng(seed).choice(train, max_images, replace=False))
        return train, val

    def truths(self, positions: np.ndarray) -> list[np.ndarray]:
        """Boolean 2-D truths at store positions: one per image, or per (image, class) row."""
        return [t for i in positions for t in truth_planes(self.masks[int(i)], self.k)]

    def truths_of(self, ids: list[str]) -> list[np.ndarray]:
        """The truths (as `truths`) of images given by id."""
        return self.truths(np.array([self.images.position(i) for i in ids]))

    def fold_of(self) -> dict[str, int]:
        return dict(zip(self.folds["id"], self.folds["fold"], strict=True))

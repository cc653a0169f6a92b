"""Option segment.context: the fold trains on tiles grown with their touching neighbours'
pixels (pipeline/neighbours/mosaic_context.py), image and mask alike, from neighbours in the
training part alone."""

from __future__ import annotations

from pipeline.training.options.base import Fold, Option


class Context(Option):
    def views(self, fold: Fold) -> None:
        fold.images, fold.masks = fold.data.trained_on(fold.cfg.segment, fold.train_idx, fold.masks)

"""Options that set how often the sampler draws each training image: coverage-bin oversampling
(segment.train.oversample) and the embed stage's balance weights (segment.balance)."""

from __future__ import annotations

from pipeline.data.datasets import sample_weights
from pipeline.neighbours import balance
from pipeline.training.options.base import Fold, Option


class Oversampling(Option):
    """Weights per coverage bin (empty, small, medium, large), times the rare-class weights
    (K classes, oversample.rare_class) of the training part; extra (pseudo-labelled) images are
    binned by their own coverage."""

    def weights(self, fold: Fold) -> None:
        presence = None if fold.data.presence is None else fold.data.presence[fold.train_idx]
        fold.weights = sample_weights(fold.coverage, fold.cfg.segment.train.oversample, presence)


class Balance(Option):
    """Rare clusters of similar images and test-like images drawn more often: the training
    part's weights times the embed stage's; extra images after it keep theirs."""

    def weights(self, fold: Fold) -> None:
        bal, data = fold.cfg.segment.balance, fold.data
        if data.traits is None:
            raise RuntimeError("segment.balance is on but the train set was opened without the embed stage")
        fold.weights[: len(fold.train_idx)] *= balance.weights(data.traits, fold.train_idx, bal.clusters, bal.test_likeness)

"""Pseudo-labels chosen by a predicted per-image score (pseudo.score_select): the seed's "label
samples as easy or hard; select pseudo-labels by the LB-score predictor rather than by pixel
confidence alone".

A pseudo-label is the test map thresholded at 0.5, so the quantity to predict is each test
image's metric at 0.5. Fold k's predictor is a LightGBM regressor (the scorer's features and
parameters) fitted on fold k's own model's maps of fold k's training part against their masks
(all of it, also the images a `segment.train.max_images` cap left out of training),
and applied to the same model's test maps.

Why in-sample: every other source leaks into fold k's OOF score. Fold k's validation masks
cannot choose the images fold k then trains on, and the OOF maps of the other folds (what the
scorer stage fits on) come from models that trained on fold k's validation images. The price
is optimism: a model predicts its own training images better than new ones, so the predicted
scores run high. Ranking is what selection needs; `min_score` is on that optimistic scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.config.schema import Config
from pipeline.core import progress
from pipeline.evaluation.oof import score_probs
from pipeline.inference.fold_models import TestMaps
from pipeline.postprocessing.features import image_features
from pipeline.postprocessing.score_predictor import regressor

PREDICTED_CSV = "predicted_scores.csv"  # id, predicted metric of each test image (in the fold's round folder)


def map_table(maps: TestMaps, images: Sequence[np.ndarray], cls_probs: np.ndarray | None) -> pd.DataFrame:
    """One feature row per map: the scorer's map statistics and the empty-mask probability
    (NaN without a classifier; LightGBM treats it as missing)."""
    dists = maps.dists if maps.dists is not None else [None] * len(maps.masks)
    pairs = progress.bar(enumerate(zip(maps.masks, dists, strict=True)), "pseudo features", len(maps.masks))
    rows = [image_features(p, d, images[i]) for i, (p, d) in pairs]
    table = pd.DataFrame(rows)
    cls = np.full(len(rows), np.nan) if cls_probs is None else np.asarray(cls_probs, dtype=float).reshape(len(rows))
    table["cls_prob"] = cls
    return table


def predicted_scores(
    cfg: Config, fit: tuple[TestMaps, Sequence[np.ndarray], list[np.ndarray]], test: tuple[TestMaps, Sequence[np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(predicted test scores, in-sample true scores of the fit images) under the submission's
    metric at 0.5, with the scorer's LightGBM parameters. `fit`: the fold model's maps of its
    training images, those images and their boolean truths; `test`: its test maps and the test
    images. Each maps' `cls` holds the empty-mask probabilities (or None)."""
    fit_maps, fit_images, truths = fit
    test_maps, test_images = test
    scores = score_probs(truths, fit_maps.masks, 0.5, cfg.submit.metric)
    model = regressor(cfg.scorer.lgbm, cfg.experiment.seed)
    model.fit(map_table(fit_maps, fit_images, fit_maps.cls), scores)
    pred = model.predict(map_table(test_maps, test_images, test_maps.cls))
    return np.clip(pred, 0.0, 1.0), scores

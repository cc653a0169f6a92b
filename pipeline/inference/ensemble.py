"""Test inference of an ensemble: each fitted model (pipeline/inference/contract.py) predicted
by its own config, on tiles grown with mosaic context where it trained so, blended with the
stage's weights; the image probabilities from the head or the separate classifier. The ensemble
stage and the offline bundle's `predict.py` both run this, so a bundle reproduces the
pipeline's own test maps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config.schema import Config
from pipeline.inference.blend import blend
from pipeline.inference.contract import FittedModel
from pipeline.inference.fold_models import cls_test_probs, seg_test_maps
from pipeline.neighbours.mosaic_context import Mosaic, for_model
from pipeline.postprocessing.readout import readout_image


@dataclass
class EnsembleTest:
    """The blended test maps, the first model's distance maps and the image probabilities
    the gate reads (seg-head classifier or the classify stage's)."""

    masks: list[np.ndarray]
    dists: list[np.ndarray] | None
    cls: np.ndarray


def ensemble_test(
    cfg: Config,
    models: Mapping[str, FittedModel],
    weights: np.ndarray,
    cls_paths: list[Path],
    images,
    mosaic: Mosaic | None = None,
) -> EnsembleTest:
    """Test inference of each model in `models` (in order), blended with `weights` and read
    out as ensemble.readout says (pipeline/postprocessing/readout.py); the
    classifier's fold files in `cls_paths` unless it rides on the segmentation encoder. The
    distance maps and the head's probabilities are the first model's. A model trained with
    context predicts tiles grown by the neighbours in `mosaic`."""
    tests, dists, head = [], None, None
    for model in models.values():
        maps = seg_test_maps(model.cfg, model.folds, for_model(images, model.cfg.segment, mosaic), cfg.ensemble.adabn)
        tests.append(maps.masks)
        dists = maps.dists if dists is None else dists
        head = maps.cls if head is None else head
    cls = head if cfg.classify.seg_head else cls_test_probs(cfg, cls_paths, images, cfg.ensemble.adabn)
    return EnsembleTest(_blend_and_read(cfg.ensemble.readout, tests, weights, cls), dists, cls)


def _blend_and_read(mode: str, tests: list[list[np.ndarray]], weights: np.ndarray, cls: np.ndarray) -> list[np.ndarray]:
    """The models' test maps blended and read out image by image, each image's inputs freed as
    it is done: a whole blended copy beside the models' maps would double the memory."""
    rows = np.asarray(cls, dtype=np.float64).reshape(len(tests[0]), -1)
    out = []
    for i in range(len(tests[0])):
        out.append(readout_image(mode, blend([[t[i]] for t in tests], weights)[0], rows[i]))
        for t in tests:
            t[i] = None
    return out

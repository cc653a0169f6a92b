"""The K-class pieces of issue 35: the K-output image classifier and its losses, rare-class
oversampling, the foreground readout, and the per-class row table."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAST, SMOKE_CFG

from pipeline.config import loader as config
from pipeline.data.datasets import rare_class_weights, sample_weights
from pipeline.evaluation.class_rows import all_empty, class_rows
from pipeline.modeling.models import ClassifierNet
from pipeline.postprocessing.readout import foreground_readout, readout_image
from pipeline.training.classifier import image_loss, mean_auc


def test_classifier_gives_one_logit_per_class_and_keeps_the_binary_shape():
    cfg = config.load(SMOKE_CFG, FAST).classify.model
    x = torch.rand(2, 3, 64, 64)
    assert ClassifierNet(cfg, 3, 5)(x)["cls"].shape == (2, 5)
    out = ClassifierNet(cfg, 3)(x)
    assert out["cls"].shape == (2,) and out["cov"].shape == (2,)


def test_weighted_bce_weighs_each_class_by_its_rarity_and_focal_differs():
    labels = np.zeros((100, 2))
    labels[:50, 0] = 1  # class 0 in half the images, class 1 in 5
    labels[:5, 1] = 1
    logits, target = torch.zeros(4, 2), torch.tensor([[1.0, 1.0]] * 4)
    plain = image_loss("bce", labels)(logits, target)
    weighted = image_loss("weighted_bce", labels)(logits, target)
    # All positives at p = 0.5: the weighted loss is log 2 x mean(pos_weight) = log 2 x (1 + 19) / 2.
    assert float(plain) == pytest.approx(np.log(2))
    assert float(weighted) == pytest.approx(np.log(2) * 10, rel=1e-5)
    focal = image_loss("focal", labels)(logits, target)
    assert float(focal) == pytest.approx(np.log(2) * 0.25, rel=1e-5)  # (1 - p_t)^2 = 0.25 at p = 0.5


def test_mean_auc_averages_the_classes():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    probs = np.array([[0.9, 0.2], [0.1, 0.8], [0.8, 0.1], [0.2, 0.3]])
    assert mean_auc(labels, probs) == pytest.approx((1.0 + 0.5) / 2)


def test_rare_class_weights_follow_the_rarest_present_class():
    presence = np.zeros((12, 3), bool)
    presence[:8, 0] = True  # 8 images of class 0, 2 of class 1, 1 of class 2
    presence[8:10, 1] = True
    presence[10, 2] = presence[10, 0] = True  # its rarest class is 2
    w = rare_class_weights(presence, 1.0)
    assert w[0] == pytest.approx(9 / 9) and w[8] == pytest.approx(9 / 2) and w[10] == pytest.approx(9 / 1) and w[11] == 1.0
    assert np.allclose(rare_class_weights(presence, 0.5), np.sqrt(w))
    cov = np.where(presence.any(1), 0.05, 0.0)
    assert np.allclose(sample_weights(cov, {"small": 2.0, "rare_class": 1.0}, presence), np.where(presence.any(1), 2.0, 1.0) * w)
    assert np.allclose(sample_weights(cov, {"small": 2.0}, presence), np.where(presence.any(1), 2.0, 1.0))  # off: unchanged


def _defect_map() -> np.ndarray:
    """Two defects on 20x20: the left one's foreground 0.6 spread 0.25/0.2/0.15 over three
    classes, the right one's 0.5 mostly class 2."""
    prob = np.zeros((20, 20, 3))
    prob[5:10, 2:7] = [0.25, 0.2, 0.15]
    prob[5:10, 12:17] = [0.05, 0.05, 0.4]
    prob[0, 0] = [0.05, 0.05, 0.0]  # below the region threshold: kept as it is
    return prob


def test_foreground_readout_gives_each_region_its_winning_class():
    out = foreground_readout(_defect_map())
    assert np.allclose(out[5:10, 2:7, 0], 0.6) and np.allclose(out[5:10, 2:7, 1:], 0)
    assert np.allclose(out[5:10, 12:17, 2], 0.5) and np.allclose(out[5:10, 12:17, :2], 0)
    assert np.allclose(out[0, 0], [0.05, 0.05, 0.0])
    # The image classifier's probabilities weigh the vote: class 1 wins the left region.
    voted = foreground_readout(_defect_map(), np.array([0.1, 0.9, 0.5]))
    assert np.allclose(voted[5:10, 2:7, 1], 0.6) and np.allclose(voted[5:10, 12:17, 2], 0.5)
    # NaN probabilities (no classifier) do not vote; readout "classes" changes nothing.
    assert np.array_equal(readout_image("foreground", _defect_map(), np.full(3, np.nan)), out)
    assert np.array_equal(readout_image("classes", _defect_map(), None), _defect_map())
    assert readout_image("foreground", _defect_map()[..., 0], np.nan).ndim == 2  # one binary class: unchanged


def test_class_rows_split_present_and_absent_rows():
    scores = np.array([0.8, 1.0, 0.0, 1.0, 0.6, 1.0])  # 3 images x 2 classes
    present = np.array([True, False, False, False, True, True])
    rows = class_rows(scores, present, np.tile([0, 1], 3), ["a", "b"])
    assert rows["a"] == {"images": 2, "present": 0.7, "absent_fp": 1.0, "mean": 0.4667, "all_empty": 0.3333}
    assert rows["b"]["present"] == 1.0 and rows["b"]["absent_fp"] == 0.0 and rows["b"]["images"] == 1
    assert all_empty(present) == 0.5

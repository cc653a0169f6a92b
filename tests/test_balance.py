"""segment.balance: sampling weights from the embed stage's clusters and test-likeness."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from test_embed import EMBED

from pipeline.core import fileio
from pipeline.core.errors import ConfigError, UserError
from pipeline.data.datasets import sample_weights
from pipeline.engine import cache
from pipeline.neighbours import balance
from pipeline.neighbours.balance import ImageTraits
from pipeline.stages import GRAPH
from pipeline.training import options, segmentation
from pipeline.training.trainset import TrainSet

BALANCE_EMBED = [*EMBED, "embed.constraint=0"]


def _traits(cluster, likeness=None) -> ImageTraits:
    cluster = np.asarray(cluster)
    return ImageTraits(cluster, np.asarray(likeness if likeness is not None else np.full(len(cluster), 0.5), float))


def test_cluster_balance_draws_every_cluster_equally_at_exponent_one():
    traits = _traits([0] * 6 + [1] * 3 + [2] * 1)
    idx = np.arange(10)
    w = balance.weights(traits, idx, clusters=1.0, test_likeness=0.0)
    per_cluster = pd.Series(w).groupby(traits.cluster).sum()
    assert np.allclose(per_cluster, per_cluster.iloc[0]) and np.isclose(w.mean(), 1.0)
    half = balance.weights(traits, idx, clusters=0.5, test_likeness=0.0)
    assert w[9] > half[9] > half[0] > w[0]  # the rare cluster gains less at a smaller exponent
    assert np.allclose(balance.weights(traits, idx, 0.0, 0.0), 1.0)


def test_cluster_sizes_are_counted_in_the_training_part_alone():
    traits = _traits([0, 0, 0, 0, 1, 1, 1, 1])
    # Cluster 1 has one image in this training part: it is the rare one here.
    w = balance.weights(traits, np.array([0, 1, 2, 4]), clusters=1.0, test_likeness=0.0)
    assert np.isclose(w[3], 3 * w[0])


def test_test_likeness_weights_are_the_odds_and_clipped():
    traits = _traits([0, 0, 0, 0], [0.5, 0.75, 0.25, 0.5])
    w = balance.weights(traits, np.arange(4), clusters=0.0, test_likeness=1.0)
    assert np.isclose(w[1] / w[0], 3.0) and np.isclose(w[0] / w[2], 3.0)
    extreme = balance.weights(_traits([0] * 3, [0.5, 0.5, 0.9999]), np.arange(3), 0.0, 1.0)
    assert np.isclose(extreme[2] / extreme[0], balance.CLIP)


def test_missing_test_likeness_is_refused():
    with pytest.raises(UserError, match="test_likeness"):
        balance.weights(_traits([0, 1], [np.nan, np.nan]), np.arange(2), 0.0, 1.0)
    assert np.allclose(balance.weights(_traits([0, 1], [np.nan, np.nan]), np.arange(2), 1.0, 0.0), 1.0)


def _weights(cfg, data, train_idx, cov):
    """The sampler's weights as a fold's options set them (oversampling, then balance when on)."""
    fold = SimpleNamespace(cfg=cfg, data=data, train_idx=train_idx, coverage=cov, weights=None)
    for option in options.for_fold(cfg):
        option.weights(fold)
    return fold.weights


def test_segment_weights_multiply_oversampling_and_leave_extra_images_at_one(smoke_cfg):
    cfg = smoke_cfg("segment.train.oversample={empty: 1.0, small: 2.0}")
    data = SimpleNamespace(traits=_traits([0, 0, 0, 1]), presence=None)  # one binary class
    cov = np.array([0.0, 0.05, 0.0, 0.0, 0.3])  # four training images, one pseudo-labelled extra
    off = _weights(cfg, data, np.arange(4), cov)
    assert off.tolist() == [1.0, 2.0, 1.0, 1.0, 1.0]
    cfg.segment.balance.clusters = 1.0
    on = _weights(cfg, data, np.arange(4), cov)
    assert on[3] / on[2] == pytest.approx(3.0) and on[1] / on[0] == pytest.approx(2.0) and on[4] == 1.0


def test_balance_needs_a_label_free_embed_stage(smoke_cfg):
    with pytest.raises(ConfigError, match="segment.balance: weights.*embed.enabled"):
        smoke_cfg("segment.balance.clusters=1.0")
    with pytest.raises(ConfigError, match="segment.balance.*constraint"):
        smoke_cfg(*EMBED, "embed.constraint=1.0", "segment.balance.test_likeness=1.0")
    smoke_cfg(*BALANCE_EMBED, "segment.balance.test_likeness=1.0")


def test_embed_is_an_upstream_of_the_training_stages_only_with_balance(smoke_cfg):
    plain, on = smoke_cfg(*BALANCE_EMBED), smoke_cfg(*BALANCE_EMBED, "segment.balance.clusters=1.0")
    for stage in ("segment", "pseudo"):
        assert "embed" not in GRAPH.key_material(plain, stage)["upstream"]
        assert "embed" in GRAPH.key_material(on, stage)["upstream"]
    assert GRAPH.stage_key(plain, "segment") == GRAPH.stage_key(smoke_cfg(), "segment")
    for stage in ("segment", "pseudo"):  # off: not hashed, so keys from before the option stay
        assert "balance" not in GRAPH.key_material(plain, stage)["config"]["segment"]
        assert GRAPH.key_material(on, stage)["config"]["segment"]["balance"]["clusters"] == 1.0


def test_traits_of_a_missing_image_are_refused(tmp_path):
    # A test image with a train image's id is not taken for it.
    both = {"id": ["a", "a"], "split": ["test", "train"]}
    fileio.write_csv(tmp_path / "clusters.csv", pd.DataFrame(both | {"cluster": [5, 0]}))
    fileio.write_csv(tmp_path / "adversarial.csv", pd.DataFrame(both | {"test_likeness": [0.9, 0.4]}))
    traits = ImageTraits.read(tmp_path, ["a"])
    assert traits.test_likeness.tolist() == [0.4] and traits.cluster.tolist() == [0]
    with pytest.raises(UserError, match="no embedding for train image 'b'"):
        ImageTraits.read(tmp_path, ["a", "b"])


@pytest.mark.slow
def test_segment_stage_trains_with_balance_weights(smoke_cfg, monkeypatch):
    cfg = smoke_cfg(*BALANCE_EMBED, "segment.balance.clusters=1.0", "segment.train.folds=[0]")
    cache.run_stage(GRAPH, cfg, "embed")  # its Fitter first, unweighted
    seen = []
    fit = segmentation.Fitter.fit

    def spy(self, ds, weights=None, on_epoch_end=None):
        seen.append(weights)
        return fit(self, ds, weights, on_epoch_end)

    monkeypatch.setattr(segmentation.Fitter, "fit", spy)
    cache.run_stage(GRAPH, cfg, "segment")
    # Oversampling times the cluster weights of fold 0's training part, in store order.
    data = TrainSet.open(cache.stage_dir(GRAPH, cfg, "ingest"), cache.stage_dir(GRAPH, cfg, "folds"), cache.stage_dir(GRAPH, cfg, "embed"))
    train_idx, _ = data.split(0, 0, cfg.experiment.seed)
    expected = sample_weights(data.coverage[train_idx], cfg.segment.train.oversample) * balance.weights(data.traits, train_idx, 1.0, 0.0)
    assert len(seen) == 1 and np.allclose(seen[0], expected)
    assert not np.allclose(expected, sample_weights(data.coverage[train_idx], cfg.segment.train.oversample))

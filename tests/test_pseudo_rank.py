"""pseudo.score_select: pseudo-labels ranked and filtered by a predicted per-image score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline import cache, fileio, pseudo_rank
from pipeline.config import ConfigError
from pipeline.inference import TestMaps as Maps  # not Test*: pytest would try to collect it
from pipeline.pseudo import LABELS, select
from pipeline.store import ArrayStore


def _maps(clean: np.ndarray, rng: np.random.Generator) -> tuple[Maps, list[np.ndarray], list[np.ndarray]]:
    """Maps whose truth is their own 0.5 threshold when `clean`, and an unrelated blob
    otherwise (score near 0), each with a blurred, uncertain look when not clean."""
    probs, truths, images = [], [], []
    for c in clean:
        truth = np.zeros((16, 16), bool)
        y, x = rng.integers(0, 8, 2)
        truth[y : y + 8, x : x + 8] = True
        if c:
            prob = np.where(truth, 0.95, 0.05)
        else:
            prob = np.clip(np.roll(truth, 8, axis=(0, 1)) * 0.6 + rng.uniform(0, 0.3, (16, 16)), 0, 1)
        probs.append(prob.astype(np.float32))
        truths.append(truth)
        images.append(np.zeros((16, 16, 1), np.uint8))
    return Maps(probs, None, None), images, truths


def test_predictor_ranks_clean_maps_first(smoke_cfg):
    cfg = smoke_cfg("scorer.lgbm={n_estimators: 50, min_child_samples: 5, verbose: -1}")
    rng = np.random.default_rng(0)
    fit_maps, fit_images, truths = _maps(np.arange(120) % 2 == 0, rng)
    clean = np.arange(40) % 4 == 0
    test_maps, test_images, _ = _maps(clean, rng)
    predicted, in_sample = pseudo_rank.predicted_scores(cfg, (fit_maps, fit_images, truths), (test_maps, test_images))
    assert in_sample[::2].min() == 1.0 and in_sample[1::2].max() < 0.5
    assert predicted[clean].min() > predicted[~clean].max()
    assert ((0 <= predicted) & (predicted <= 1)).all()


def test_select_filters_and_orders_by_predicted_score(smoke_cfg):
    pcfg = smoke_cfg("pseudo.min_confident_share=0", "pseudo.score_select.min_score=0.5").pseudo
    probs = [np.full((4, 4), 0.99)] * 4
    cls = np.full(4, np.nan)
    assert select(pcfg, probs, cls).tolist() == [0, 1, 2, 3]  # all equally confident
    assert select(pcfg, probs, cls, np.array([0.6, 0.2, 0.9, 0.5])).tolist() == [2, 0, 3]


def test_score_select_needs_rounds_and_one_class(smoke_cfg):
    with pytest.raises(ConfigError, match="pseudo.score_select.enabled: chooses the images of pseudo rounds"):
        smoke_cfg("pseudo.score_select.enabled=true", "pseudo.rounds=0", "ensemble.models=[segment]")


def test_score_select_keys_are_opt_in(smoke_cfg, tmp_path):
    off = smoke_cfg(artifacts=tmp_path)
    tweak_off = smoke_cfg("pseudo.score_select.min_score=0.3", artifacts=tmp_path)
    on = smoke_cfg("pseudo.score_select.enabled=true", artifacts=tmp_path)
    assert cache.stage_key(tweak_off, "pseudo") == cache.stage_key(off, "pseudo")
    assert cache.stage_key(on, "pseudo") != cache.stage_key(off, "pseudo")
    lgbm = smoke_cfg("pseudo.score_select.enabled=true", "scorer.lgbm={n_estimators: 10}", artifacts=tmp_path)
    assert cache.stage_key(lgbm, "pseudo") != cache.stage_key(on, "pseudo")  # it fits the scorer's LightGBM


@pytest.mark.slow
def test_pseudo_stage_selects_by_predicted_score(smoke_cfg, tmp_path):
    # Every image passes the confidence filters, so the predicted score alone chooses.
    confident = ["pseudo.min_confident_share=0", "pseudo.prob_lo=0.5", "pseudo.prob_hi=0.5"]
    on = smoke_cfg("pseudo.score_select.enabled=true", *confident, "pseudo.max_images=3", artifacts=tmp_path)
    folder, ran = cache.run_stage(on, "pseudo")
    assert ran
    fold = folder / "round1" / "fold0"
    predicted = fileio.read_csv(fold / pseudo_rank.PREDICTED_CSV, dtype={"id": str})
    chosen = list(ArrayStore(fold, LABELS).ids)
    best = predicted.sort_values("predicted", ascending=False, kind="stable")["id"].tolist()[:3]
    assert chosen == best
    assert isinstance(predicted, pd.DataFrame) and predicted["predicted"].between(0, 1).all()

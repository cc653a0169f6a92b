"""pseudo.score_select: pseudo-labels ranked and filtered by a predicted per-image score."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core import fileio
from pipeline.core.errors import ConfigError
from pipeline.core.store import ArrayStore
from pipeline.data.tables import load_folds
from pipeline.engine import cache
from pipeline.inference.fold_models import TestMaps as Maps  # not Test*: pytest would try to collect it
from pipeline.stages import GRAPH
from pipeline.stages import pseudo as stage
from pipeline.training import pseudo_select as pseudo_rank
from pipeline.training.pseudo_labels import LABELS, select


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
    unsure = np.array([0.99, 0.5, 0.99, 0.99])  # the classifier filter still applies
    assert select(pcfg, probs, unsure, np.array([0.6, 0.95, 0.9, 0.5])).tolist() == [2, 0, 3]


def test_select_breaks_predicted_ties_by_confidence(smoke_cfg):
    pcfg = smoke_cfg("pseudo.min_confident_share=0").pseudo
    probs = [np.full((4, 4), v) for v in (0.6, 0.99, 0.5, 0.95)]  # confident shares 0, 1, 0, 1
    chosen = select(pcfg, probs, np.full(4, np.nan), np.full(4, 0.7))
    assert chosen.tolist()[:2] == [1, 3]


def test_score_select_needs_rounds_and_one_class(smoke_cfg):
    with pytest.raises(ConfigError, match="pseudo.score_select.enabled: chooses the images of pseudo rounds"):
        smoke_cfg("pseudo.score_select.enabled=true", "pseudo.rounds=0", "ensemble.models=[segment]")
    with pytest.raises(ConfigError, match="pseudo.score_select.enabled: predicts one binary class"):
        smoke_cfg("pseudo.score_select.enabled=true", "data.classes=[a, b]")


def test_score_select_keys_are_opt_in(smoke_cfg, tmp_path):
    off = smoke_cfg(artifacts=tmp_path)
    tweak_off = smoke_cfg("pseudo.score_select.min_score=0.3", artifacts=tmp_path)
    on = smoke_cfg("pseudo.score_select.enabled=true", artifacts=tmp_path)
    assert GRAPH.stage_key(tweak_off, "pseudo") == GRAPH.stage_key(off, "pseudo")
    assert GRAPH.stage_key(on, "pseudo") != GRAPH.stage_key(off, "pseudo")
    lgbm = smoke_cfg("pseudo.score_select.enabled=true", "scorer.lgbm={n_estimators: 10}", artifacts=tmp_path)
    assert GRAPH.stage_key(lgbm, "pseudo") != GRAPH.stage_key(on, "pseudo")  # it fits the scorer's LightGBM


@pytest.mark.slow
def test_pseudo_stage_selects_by_predicted_score(smoke_cfg, tmp_path, monkeypatch):
    # Every image passes the confidence filters, so the predicted score alone chooses.
    confident = ["pseudo.min_confident_share=0", "pseudo.prob_lo=0.5", "pseudo.prob_hi=0.5"]
    on = smoke_cfg("pseudo.score_select.enabled=true", *confident, "pseudo.max_images=3", artifacts=tmp_path)
    cache.run_stage(GRAPH, on, "segment")
    calls = []

    def recording(cfg, model_dir, images, adabn=False, folds=None):
        calls.append((folds, getattr(images, "positions", None)))
        return original(cfg, model_dir, images, adabn, folds)

    original = stage.predict_test
    monkeypatch.setattr(stage, "predict_test", recording)
    folder, ran = cache.run_stage(GRAPH, on, "pseudo")
    assert ran
    # Honest CV: fold k's predictor reads fold k's model alone, on its training part alone.
    table = load_folds(cache.stage_dir(GRAPH, on, "folds")).set_index("id")
    images = ArrayStore(cache.stage_dir(GRAPH, on, "ingest"), "images")
    fold_at = table.loc[list(images.ids), "fold"].to_numpy()
    fits = [(folds, pos) for folds, pos in calls if pos is not None]
    assert fits and all(len(folds) == 1 and not (fold_at[pos] == folds[0]).any() for folds, pos in fits)
    fold = folder / "round1" / "fold0"
    predicted = fileio.read_csv(fold / pseudo_rank.PREDICTED_CSV, dtype={"id": str}).set_index("id")["predicted"]
    chosen = list(ArrayStore(fold, LABELS).ids)
    assert len(chosen) == 3 and predicted.between(0, 1).all()
    assert predicted[chosen].is_monotonic_decreasing
    assert predicted[chosen].min() >= predicted.drop(chosen).max()

"""scorer.difficulty: a grid candidate per easy / medium / hard group of images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.bundle import build as bundle
from pipeline.core.errors import ConfigError, UserError
from pipeline.postprocessing.policy import MIN_GROUP_ROWS, by_difficulty, choose, difficulty_groups
from pipeline.postprocessing.score_predictor import Problem, nested_cv


def _scores(n: int = 90, seed: int = 0) -> np.ndarray:
    """Candidate 0 best overall; hard images (low score under it) do better under candidate 1."""
    rng = np.random.default_rng(seed)
    base = rng.random(n)
    return np.stack([base, np.where(base < 0.33, base + 0.3, base - 0.3)], axis=1)


def test_each_group_gets_its_own_grid_candidate():
    fit = _scores()
    assert int(np.argmax(fit.mean(axis=0))) == 0
    pred = np.array([[0.1, 0.3], [0.5, 0.2], [0.9, 0.6]])  # predicted hard, medium, easy
    assert by_difficulty(pred, fit).tolist() == [1, 0, 0]
    fit_group, group = difficulty_groups(fit, pred)
    assert group.tolist() == [0, 1, 2] and np.bincount(fit_group).tolist() == [30, 30, 30]
    assert choose("difficulty", 3, pred, fit).tolist() == [1, 0, 0]


def test_a_small_group_keeps_the_overall_candidate():
    pred = np.array([[0.1, 0.3], [0.5, 0.2], [0.9, 0.6]])
    assert by_difficulty(pred, _scores(n=3 * MIN_GROUP_ROWS))[0] == 1  # a full hard group: its own candidate
    assert by_difficulty(pred, _scores(n=3 * (MIN_GROUP_ROWS - 1)))[0] == 0  # too few: the overall one


def test_tied_predictions_keep_the_fit_proportions():
    fit = _scores()
    pred = np.repeat(np.array([[0.2, 0.1], [0.5, 0.1], [0.8, 0.1]]), [10, 50, 30], axis=0)  # piecewise constant
    _, group = difficulty_groups(fit, pred)
    assert np.bincount(group).tolist() == [30, 30, 30]


def test_the_policy_is_nested_only_when_switched_on():
    rng = np.random.default_rng(1)
    n = 120
    fold, cands, scores = np.repeat(np.arange(3), n // 3), np.array([[0.5, 0, 0], [0.3, 0, 0]], float), _scores(n, 1)
    feats = pd.DataFrame({"cls_prob": rng.random(n), "x": scores[:, 0] + rng.normal(0, 0.05, n)}, index=[f"i{j}" for j in range(n)])
    params = {"n_estimators": 30, "min_child_samples": 5}
    off, _ = nested_cv(Problem(feats, cands, scores, fold, params, 0))
    on, _ = nested_cv(Problem(feats, cands, scores, fold, params, 0, difficulty=True))
    assert "difficulty" not in off and {k: v for k, v in on.items() if k not in ("difficulty", "auto")} == {
        k: v for k, v in off.items() if k != "auto"
    }
    # A feature that predicts the difficulty: the hard third gets candidate 1 and gains over grid.
    assert on["difficulty"] > on["grid"] + 0.03


def test_policy_difficulty_needs_the_switch_and_is_not_bundled(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match="scorer.policy.*scorer.difficulty"):
        smoke_cfg("scorer.policy=difficulty")
    cfg = smoke_cfg("scorer.policy=difficulty", "scorer.difficulty=true")
    (tmp_path / "policy.json").write_text(json.dumps({"policy": "difficulty"}))
    with pytest.raises(UserError, match="difficulty"):
        bundle.frozen_policy(cfg, tmp_path)

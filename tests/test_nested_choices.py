"""Point 9's second-order leaks, on hand-made data: blend weights and the scorer's `auto`
policy are chosen without the fold they are scored on."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.evaluation.oof import score_probs
from pipeline.inference.blend import fit_weights, nested_blend
from pipeline.postprocessing.score_predictor import Problem, inner_choice, nested_cv


def _two_models(seed: int = 0):
    """Two models whose better one differs by fold: model a is right on fold 0, b on fold 1."""
    rng = np.random.default_rng(seed)
    truths, a, b, fold = [], [], [], []
    for k in (0, 1):
        for _ in range(20):
            t = rng.random((8, 8)) > 0.5
            good, bad = t * 0.9 + 0.05, rng.random((8, 8))
            truths.append(t.astype(np.uint8))
            a.append(good if k == 0 else bad)
            b.append(bad if k == 0 else good)
            fold.append(k)
    return [a, b], truths, np.array(fold)


def test_blend_weights_of_a_fold_are_fitted_on_the_other_folds():
    oofs, truths, fold = _two_models()
    nb = nested_blend(oofs, truths, fold)
    # Fitted on fold 1 alone, fold 0's weights favour model b, which is wrong on fold 0.
    assert nb.fold_weights[0][1] > nb.fold_weights[0][0] and nb.fold_weights[1][0] > nb.fold_weights[1][1]
    in_sample = [
        fit_weights([[m[i] for i in np.flatnonzero(fold == k)] for m in oofs], [truths[i] for i in np.flatnonzero(fold == k)])[1]
        for k in (0, 1)
    ]
    assert nb.scores.mean() < np.mean(in_sample) - 0.2  # the in-sample fit would report ~1.0
    for i in np.flatnonzero(fold == 0):
        np.testing.assert_allclose(nb.oof[i], nb.fold_weights[0][0] * oofs[0][i] + nb.fold_weights[0][1] * oofs[1][i])
    np.testing.assert_allclose(nb.scores, score_probs(truths, nb.oof))


def test_blend_without_fitting_is_uniform_and_one_fold_cannot_nest():
    oofs, truths, fold = _two_models()
    assert all(np.allclose(w, 0.5) for w in nested_blend(oofs, truths, fold, fit=False).fold_weights.values())
    single = nested_blend(oofs, truths, np.zeros(len(truths), int))
    assert np.allclose(single.fold_weights[0], 0.5)


def _problem(n_per_fold: int = 30, seed: int = 0) -> Problem:
    """Candidates where the best policy flips between folds, so that the best of the outer
    nested scores is an optimistic pick."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per_fold
    fold = np.repeat(np.arange(3), n_per_fold)
    cands = np.array([[0.5, 0, 0], [0.4, 0, 0], [0.6, 0, 0], [0.5, 10, 0]], dtype=float)
    scores = rng.random((n, len(cands)))
    features = pd.DataFrame({"cls_prob": rng.random(n), "x": rng.random(n)}, index=[f"i{j}" for j in range(n)])
    return Problem(features, cands, scores, fold, {"n_estimators": 20, "min_child_samples": 5}, 0)


def test_auto_is_scored_with_its_choice_made_inside_the_nesting():
    # Pure noise: no policy is really better, so the best of the outer nested scores is an
    # optimistic pick (what `auto` reported before); the choice made on k-1 folds alone is not.
    p = _problem()
    nested, _ = nested_cv(p)
    best_outer = max(nested[name] for name in ("none", "grid", "global", "per_image"))
    assert nested["auto"] < best_outer - 0.02
    assert len({inner_choice(p.rows(p.fold != k)) for k in range(3)}) > 1  # chosen per outer fold
    without, _ = nested_cv(p, with_auto=False)
    assert "auto" not in without and {k: v for k, v in nested.items() if k != "auto"} == without


def test_a_single_fit_fold_is_split_at_random_for_the_inner_choice():
    p = _problem()
    assert inner_choice(p.rows(p.fold == 0)) in ("none", "grid", "global", "per_image")


def test_the_random_inner_split_keeps_groups_together(monkeypatch):
    p = _problem()
    one = p.rows(p.fold == 0)
    one.groups = np.repeat(np.arange(10), 3)  # 30 rows in 10 groups of 3
    seen = []
    monkeypatch.setattr(
        "pipeline.postprocessing.score_predictor.nested_cv",
        lambda q, with_auto: (seen.append(q.fold), ({n: 0.0 for n in ("none", "grid", "global", "per_image")}, None))[1],
    )
    inner_choice(one)
    split = seen[0]
    assert len(np.unique(split)) > 1
    assert all(len(np.unique(split[one.groups == g])) == 1 for g in range(10))

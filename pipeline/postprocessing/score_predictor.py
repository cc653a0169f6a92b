"""The "LB-score predictor": LightGBM predicts each image's metric under each candidate
post-processing (pixel threshold, min area, gate) from features of its OOF prediction, and
the policies that turn its predictions (or the true scores) into a choice per image.

Policies, all evaluated with the same nested CV over the folds (fit on k-1 folds' OOF,
choose on the k-th without its labels where the policy allows, score the k-th):
  grid       candidate with the best true mean on the k-1 fit folds (the usual Kaggle way)
  global     candidate with the best *predicted* mean on the k-th fold
  per_image  each image's candidate with the best predicted score
  none       no post-processing (threshold 0.5, no min area, no gate)
  difficulty (scorer.difficulty) easy / medium / hard groups, each with its grid candidate: a fit
             row's group from its true score, a chosen-for row's from its predicted score
  auto       the policy that scores best in an inner nested CV on the k-1 fit folds alone
             (none on a tie), applied to the k-th: taking the best of the outer scores
             instead would be a selection on the folds it is scored on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd

from pipeline.postprocessing.policy import choose, design, predicted

POLICIES = ("grid", "global", "per_image")
# The inner CV of `auto` needs at least two folds; with one fit fold it splits the rows at random.
INNER_SPLITS = 3


@dataclass
class Problem:
    """The scorer's data: per-image features, the candidate grid (C, 3), the true per-image
    score of every candidate (N, C), each image's fold, and the LightGBM params and seed."""

    features: pd.DataFrame
    cands: np.ndarray
    scores: np.ndarray
    fold: np.ndarray
    params: dict
    seed: int
    groups: np.ndarray | None = None  # the folds' groups (mosaic or metadata), kept together
    # K classes: each row is an (image, class) pair and this is its class; grid and global
    # then choose a candidate per class (None: one binary class, rows are images)
    row_class: np.ndarray | None = None
    difficulty: bool = False  # the policy `difficulty` among the policies

    @property
    def policies(self) -> tuple[str, ...]:
        return POLICIES + (("difficulty",) if self.difficulty else ())

    def rows(self, mask: np.ndarray) -> Problem:
        groups = None if self.groups is None else self.groups[mask]
        row_class = None if self.row_class is None else self.row_class[mask]
        return dataclasses.replace(
            self, features=self.features[mask], scores=self.scores[mask], fold=self.fold[mask], groups=groups, row_class=row_class
        )

    def classes(self, at: np.ndarray, fit: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The class of the rows `at` and of the rows `fit` (None without classes), for choose()."""
        return None if self.row_class is None else (self.row_class[at], self.row_class[fit])

    @property
    def raw(self) -> int | None:
        """The no-post-processing candidate (threshold 0.5, no min area, no gate), if listed."""
        c = self.cands
        base = np.flatnonzero((c[:, 1] == 0) & (c[:, 2] == 0) & np.isclose(c[:, 0], 0.5))
        return int(base[0]) if len(base) else None

    def subsets(self) -> dict[str, np.ndarray]:
        """Grid search restricted to candidate subsets, reported beside the policies."""
        c = self.cands
        if self.raw is None:
            return {}
        return {"raw@0.5": np.array([self.raw]), "gate_only": np.flatnonzero((c[:, 1] == 0) & np.isclose(c[:, 0], 0.5))}


def regressor(params: dict, seed: int) -> lgb.LGBMRegressor:
    """A LightGBM regressor with `params` (scorer.lgbm) over reproducible defaults."""
    # deterministic + force_col_wise: the same data gives the same trees on every run and
    # machine (LightGBM otherwise picks row- or column-wise histograms by timing them).
    defaults = {"random_state": seed, "n_jobs": 2, "deterministic": True, "force_col_wise": True, "verbose": -1}
    return lgb.LGBMRegressor(**{**defaults, **params})


def fit_model(features: pd.DataFrame, cands: np.ndarray, scores: np.ndarray, params: dict, seed: int) -> lgb.LGBMRegressor:
    model = regressor(params, seed)
    model.fit(design(features, cands), scores.reshape(-1))
    return model


def options(p: Problem) -> list[str]:
    """Policies `auto` chooses among; none first, so that it wins a tie."""
    return (["none"] if p.raw is not None else []) + list(p.policies)


def best_policy(nested: dict[str, float], p: Problem) -> str:
    return max(options(p), key=lambda name: nested[name])


def nested_cv(p: Problem, with_auto: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """Held-out mean metric of each policy (and of grid search on candidate subsets; `auto`
    when `with_auto`), and LightGBM's held-out predictions (N, C)."""
    held, pred_all = nested_rows(p, with_auto)
    return means(held), pred_all


def means(held: dict[str, np.ndarray]) -> dict[str, float]:
    """Each policy's mean held-out metric (`none` = grid on the raw candidate alone)."""
    out = {name: round(float(v.mean()), 4) for name, v in held.items()}
    if "raw@0.5" in out:
        out["none"] = out["raw@0.5"]
    return out


def nested_rows(p: Problem, with_auto: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The held-out metric of every row under each policy (as nested_cv), and LightGBM's
    held-out predictions (N, C)."""
    subsets = p.subsets()
    held = {name: np.zeros(len(p.fold)) for name in [*p.policies, *subsets, *(["auto"] if with_auto else [])]}
    pred_all = np.zeros_like(p.scores)
    for k in np.unique(p.fold):
        fit, val = p.fold != k, p.fold == k
        model = fit_model(p.features[fit], p.cands, p.scores[fit], p.params, p.seed)
        pred = predicted(model, p.features[val], p.cands)
        pred_all[val] = pred
        rows = np.flatnonzero(val)
        classes = p.classes(val, fit)
        for name in p.policies:
            held[name][val] = p.scores[rows, choose(name, len(rows), pred, p.scores[fit], classes=classes)]
        for name, cols in subsets.items():
            held[name][val] = p.scores[rows, cols[choose("grid", len(rows), None, p.scores[fit][:, cols], classes=classes)]]
        if with_auto:
            inner = inner_choice(p.rows(fit))
            held["auto"][val] = p.scores[rows, choose(inner, len(rows), pred, p.scores[fit], p.raw, classes)]
    if "raw@0.5" in held:
        held["none"] = held["raw@0.5"]
    return held, pred_all


def inner_choice(p: Problem) -> str:
    """The policy `auto` picks from these rows alone: by their own nested CV over their folds,
    or over a seeded random split of the rows when they hold a single fold."""
    if len(np.unique(p.fold)) < 2:
        # Whole groups to a split, as the folds keep them: a group split would leak within it.
        _, unit = np.unique(p.groups if p.groups is not None else np.arange(len(p.fold)), return_inverse=True)
        split = np.random.default_rng(p.seed).permutation(unit.max() + 1)[unit] % INNER_SPLITS
        p = dataclasses.replace(p, fold=split)
    inner, _ = nested_cv(p, with_auto=False)
    return best_policy(inner, p)

"""Fast checks of the bundle's parts: the module closure it carries, its refusal of training
code, its plan format, the planner's budget and choice."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.bundle import build as bundle
from pipeline.bundle import code as bundle_code
from pipeline.bundle import offline, planner
from pipeline.core.errors import UserError


def test_the_bundle_carries_inference_modules_only():
    modules, third = bundle_code.closure()
    assert {
        "bundle.offline",
        "inference.fold_models",
        "inference.predict",
        "modeling.models",
        "data.geometry",
        "postprocessing.policy",
        "submission.binary",
        "data.ingest",
    } <= set(modules)
    assert not any(bundle_code.is_training(m) for m in modules)
    assert {"torch", "numpy", "segmentation_models_pytorch", "lightgbm"} <= third
    assert "albumentations" not in third  # augmentation is training code


def test_a_training_module_in_the_closure_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_code, "closure", lambda: (["bundle.offline", "training.loop"], set()))
    with pytest.raises(UserError, match="training code .*training.loop"):
        bundle_code.write_code(tmp_path, None)
    assert not (tmp_path / "pipeline").exists()


def test_requirements_are_pinned_with_what_they_need():
    reqs = bundle_code.requirements({"segmentation_models_pytorch"})
    names = {r.split("==")[0] for r in reqs}
    assert {"segmentation-models-pytorch", "timm", "torch"} <= names
    assert all("==" in r and "+" not in r for r in reqs)


def test_the_bundle_reads_only_its_format(tmp_path):
    (tmp_path / "bundle.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(UserError, match="format 99"):
        offline.read_plan(tmp_path)
    with pytest.raises(UserError, match="not found"):
        offline.read_plan(tmp_path / "nowhere")


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("3600", 3600)])
def test_budget_units(text, seconds):
    assert planner.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["2 hours", "", "h", "5x"])
def test_a_budget_that_is_not_a_duration_is_refused(text):
    with pytest.raises(UserError, match="not a duration"):
        planner.parse_budget(text)


def test_the_plan_takes_the_best_oof_that_fits_then_more_folds():
    plans = pd.DataFrame(
        [
            {"models": "a", "views": "none", "folds": 1, "seconds": 10.0, "oof": 0.80},
            {"models": "a", "views": "none", "folds": 2, "seconds": 20.0, "oof": 0.80},
            {"models": "a", "views": "none+hflip", "folds": 1, "seconds": 20.0, "oof": 0.82},
            {"models": "a", "views": "none+hflip", "folds": 2, "seconds": 40.0, "oof": 0.82},
        ]
    )
    assert planner.choose(plans, 40)[["views", "folds"]].tolist() == ["none+hflip", 2]
    assert planner.choose(plans, 39)[["views", "folds"]].tolist() == ["none+hflip", 1]
    assert planner.choose(plans, 15)[["views", "folds"]].tolist() == ["none", 1]
    with pytest.raises(UserError, match="nothing fits 5 s"):
        planner.choose(plans, 5)


def test_a_stage_import_is_seen_and_refused(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from pipeline.stages import ensemble\nimport pipeline.stages.submit\nfrom pipeline.inference import predict\n")
    own, third = bundle_code._imports(module)
    assert own == {"stages.ensemble", "stages.submit", "inference.predict"} and not third
    assert bundle_code.is_training("stages.ensemble") and bundle_code.is_training("stages")


def test_the_frozen_candidate_grid_is_the_scorer_s():
    import numpy as np

    from pipeline.postprocessing.masks import candidate_scores
    from pipeline.postprocessing.policy import candidate_grid

    truths, probs = [np.zeros((4, 4), bool)], [np.zeros((4, 4), np.float32)]
    t, a, g = [0.3, 0.5], [0, 10, 20], [0.0, 0.5]
    cands, _ = candidate_scores(truths, probs, np.array([0.9]), t, a, g)
    assert (cands == candidate_grid(t, a, g)).all()


def test_a_policy_on_knn_features_is_refused(tmp_path, smoke_cfg):
    from test_balance import BALANCE_EMBED

    (tmp_path / "policy.json").write_text(json.dumps({"policy": "per_image"}))
    with pytest.raises(UserError, match="scorer.knn"):
        bundle.frozen_policy(smoke_cfg(*BALANCE_EMBED, "scorer.knn=3"), tmp_path)

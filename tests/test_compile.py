"""experiment.compile: OOF and test inference through torch.compile (pipeline.inference.predict.compiled),
with the eager model as the fallback when compiling fails."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

from pipeline.inference import predict as predict_mod
from pipeline.training.segmentation import infer_spec


@pytest.fixture
def setup(flip_predictor):
    return flip_predictor(11)


def _masks(model, images, spec) -> list[np.ndarray]:
    return [out["mask"] for _, out in predict_mod.predict(model, images, np.arange(len(images)), spec)]


def test_the_switch_reaches_the_oof_and_test_specs_only(smoke_cfg):
    cfg = smoke_cfg("experiment.compile=true")
    assert infer_spec(cfg.segment, torch.device("cpu"), ["none"]).compile is False  # validation
    assert infer_spec(cfg.segment, torch.device("cpu"), ["none"], cfg.experiment).compile is True


def test_a_failing_compile_falls_back_to_the_eager_model(setup, monkeypatch, caplog):
    model, images, spec = setup

    def broken(module, **kwargs):
        def run(x):
            raise RuntimeError("no compiler here")

        return run

    monkeypatch.setattr(predict_mod.torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="pipeline.inference.predict"):
        fast = _masks(model, images, dataclasses.replace(spec, compile=True))
    assert sum("predicting eagerly: RuntimeError: no compiler here" in r.message for r in caplog.records) == 1
    for a, b in zip(fast, _masks(model, images, spec), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_compiled_inference_matches_eager(setup, monkeypatch):
    """11 images in batches of 4: the short last batch is padded, so one shape is compiled."""
    model, images, spec = setup
    calls = []
    real = torch.compile
    monkeypatch.setattr(predict_mod.torch, "compile", lambda m, **kw: calls.append(kw) or real(m, **kw))
    fast = _masks(model, images, dataclasses.replace(spec, compile=True))
    assert calls == [{"dynamic": False}]
    eager = _masks(model, images, spec)
    assert len(fast) == len(eager) == 11
    for a, b in zip(fast, eager, strict=True):
        assert a.shape == b.shape == (40, 40)
        assert np.abs(a - b).max() < 0.02  # conv and BatchNorm folded: float differences only

"""Classifier gating stage: patch mode (weighted vs max aggregation, second round) on the tiny dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.store import ArrayStore
from pipeline.engine import cache
from pipeline.stages import GRAPH
from pipeline.training.classifier import patch_grid

PATCH = ["classify.patch.enabled=true", "classify.patch.size=64", "classify.patch.stride=40", "classify.train.epochs=2"]


def test_patch_grid_covers_every_pixel(smoke_cfg, tmp_path):
    cfg = smoke_cfg(artifacts=tmp_path)
    images = ArrayStore(cache.run_stage(GRAPH, cfg, "ingest")[0], "images")
    idx, yx = patch_grid(images, np.arange(3), 64, 40)
    for i in range(3):
        h, w = images[i].shape[:2]
        cover = np.zeros((h, w), bool)
        for y, x in yx[idx == i]:
            cover[y : y + 64, x : x + 64] = True
        assert cover.all()


@pytest.mark.slow
def test_patch_mode_second_round_and_aggregation(smoke_cfg, tmp_path, pipeline_logs):
    # SWA makes the final model independent of validation: without it the best epoch is picked
    # by a validation score that itself depends on the aggregation, and the models could differ.
    swa = "classify.train.swa_epochs=1"
    weighted = smoke_cfg(*PATCH, "classify.patch.second_round_conf=0.02", swa, artifacts=tmp_path)
    folder, _ = cache.run_stage(GRAPH, weighted, "classify")
    assert any("round 2:" in m for m in pipeline_logs())
    assert (folder / "fold0" / "round2" / "model.pt").exists()
    metrics = json.loads((folder / "manifest.json").read_text())["metrics"]
    assert 0.0 <= metrics["oof_auc"] <= 1.0 or np.isnan(metrics["oof_auc"])
    maxed = smoke_cfg(*PATCH, "classify.patch.second_round_conf=0.02", "classify.patch.aggregate=max", swa, artifacts=tmp_path)
    folder_max, _ = cache.run_stage(GRAPH, maxed, "classify")
    p_w = pd.read_csv(folder / "oof_cls.csv")["prob"].to_numpy()
    p_m = pd.read_csv(folder_max / "oof_cls.csv")["prob"].to_numpy()
    # Same models (aggregation is applied at prediction), different image probabilities; max >= weighted mean.
    assert not np.allclose(p_w, p_m) and (p_m >= p_w - 1e-6).all()

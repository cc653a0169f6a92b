"""Every shipped config loads; the GPU config starts and trains on CPU; the seg_head classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import loader as config
from pipeline.engine import cache
from pipeline.stages import GRAPH

REPO = Path(__file__).resolve().parent.parent

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_loads(path: Path):
    cfg = config.load(path)
    assert cfg.experiment.name == path.stem or path.stem == "base"


@pytest.mark.slow
def test_gpu_config_runs_a_training_step_on_cpu(smoke_overrides, tmp_path):
    """tgs_salt_gpu.yaml as it is (lite2 encoder with offline weights, 256 px, its losses and
    augmentations), on the tiny dataset, for one epoch of two steps."""
    overrides = smoke_overrides(
        "segment.train.epochs=1",
        "segment.train.swa_epochs=0",
        "segment.train.folds=[0]",
        "segment.train.max_images=8",
        "segment.train.batch_size=4",
        "segment.train.num_workers=0",
        "experiment.device=cpu",
        artifacts=tmp_path,
    )
    cfg = config.load(REPO / "configs" / "tgs_salt_gpu.yaml", overrides)
    assert cfg.segment.model.encoder == "tu-efficientnet_lite2" and cfg.segment.input.size == 256
    folder, ran = cache.run_stage(GRAPH, cfg, "segment")
    assert ran
    history = pd.read_csv(folder / "fold0" / "metrics.csv")
    assert len(history) == 1 and np.isfinite(history["train_loss"]).all()
    assert json.loads((folder / "manifest.json").read_text())["metrics"]["n_oof"] > 0


@pytest.mark.slow
def test_seg_head_classifier(smoke_cfg, tmp_path):
    """classify.source=seg_head: the segment stage trains an image head on its encoder, writes
    OOF probabilities and ROC, and the ensemble takes its classifier probabilities from it."""
    cfg = smoke_cfg("classify.source=seg_head", "pseudo.rounds=0", "ensemble.models=[segment]", artifacts=tmp_path)
    separate = smoke_cfg("pseudo.rounds=0", "ensemble.models=[segment]", artifacts=tmp_path)
    assert GRAPH.stage_key(cfg, "segment") != GRAPH.stage_key(separate, "segment")
    seg_dir, _ = cache.run_stage(GRAPH, cfg, "segment")
    metrics = json.loads((seg_dir / "manifest.json").read_text())["metrics"]
    assert "oof_auc" in metrics and (seg_dir / "roc.png").exists()
    oof = pd.read_csv(seg_dir / "oof_cls.csv", dtype={"id": str})
    assert len(oof) == 48 and oof["prob"].between(0, 1).all()
    ens_dir, _ = cache.run_stage(GRAPH, cfg, "ensemble")
    assert not pd.read_csv(ens_dir / "oof_cls.csv")["prob"].isna().any()
    assert not pd.read_csv(ens_dir / "test_cls.csv")["prob"].isna().any()
    classify_dir, _ = cache.run_stage(GRAPH, cfg, "classify")
    assert not list(classify_dir.glob("fold*"))  # no separate classifier was trained

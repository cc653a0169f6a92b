"""Experiment tracking (pipeline/engine/tracking.py): stage runs read back from the MLflow store."""

from __future__ import annotations

import logging

import pandas as pd
from test_cache import _cfg

from pipeline.engine import cache, tracking
from pipeline.engine.cache import Context, Stage
from pipeline.stages import GRAPH


def _fold_stage(ctx: Context) -> dict:
    """A stage that trains like a real one: an epoch curve per fold and a plot."""
    for k in (0, 1):
        (ctx.dir / f"fold{k}").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [0.9, 0.5 - k * 0.1, 0.3], "val_score": [0.5, 0.6, 0.7 + k * 0.01]}).to_csv(
            ctx.dir / f"fold{k}" / "metrics.csv", index=False
        )
    (ctx.dir / "curves.png").write_bytes(b"\x89PNG not really")
    return {"oof_tgs": 0.71, "per_fold": {"0": 0.7, "1": 0.72}, "raw@0.5": 0.69, "name": "text is not a metric", "flag": True}


GRAPH_T = GRAPH.with_stages(Stage("t_track", ("pseudo.rounds",), (), _fold_stage, doc="test: tracked"))


def _runs(uri: str, experiment: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def test_a_stage_run_is_read_back_from_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = _cfg(tmp_path, f"experiment.tracking_uri={uri}")
    folder, ran = cache.run_stage(GRAPH_T, cfg, "t_track")
    assert ran
    runs = _runs(uri, cfg.experiment.name)
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["tags.mlflow.runName"] == f"t_track-{folder.name.split('-')[-1]}" and run["tags.stage"] == "t_track"
    assert run["metrics.oof_tgs"] == 0.71 and run["metrics.per_fold.1"] == 0.72 and run["metrics.raw_0.5"] == 0.69
    assert "metrics.name" not in runs and "metrics.flag" not in runs
    assert run["params.pseudo.rounds"] == str(cfg.pseudo.rounds) and run["params.experiment.seed"] == str(cfg.experiment.seed)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    history = client.get_metric_history(run["run_id"], "fold1/val_score")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.6), (2, 0.71)]
    assert {a.path for a in client.list_artifacts(run["run_id"])} == {"config.yaml", "manifest.json", "curves.png"}
    # A cached rerun logs nothing; a forced one is a second run of the same stage.
    assert not cache.run_stage(GRAPH_T, cfg, "t_track")[1]
    cache.run_stage(GRAPH_T, cfg, "t_track", force=True)
    assert len(_runs(uri, cfg.experiment.name)) == 2


def test_off_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    cfg = _cfg(tmp_path, "experiment.tracking=false", f"experiment.tracking_uri=sqlite:///{tmp_path / 'store.db'}")
    cache.run_stage(GRAPH_T, cfg, "t_track")
    assert not (tmp_path / "store.db").exists()


def test_an_unavailable_store_costs_one_warning_not_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    monkeypatch.setattr(tracking, "_warned", set())
    (tmp_path / "file").write_text("a file where the store's folder should be")
    cfg = _cfg(tmp_path, f"experiment.tracking_uri=sqlite:///{tmp_path / 'file' / 'store.db'}")
    with caplog.at_level(logging.WARNING, logger="pipeline.engine.tracking"):
        folder, ran = cache.run_stage(GRAPH_T, cfg, "t_track")
        cache.run_stage(GRAPH_T, cfg, "t_track", force=True)
    assert ran and cache.read_manifest(folder)["metrics"]["oof_tgs"] == 0.71
    warnings = [r for r in caplog.records if "experiment tracking off" in r.getMessage()]
    assert len(warnings) == 1


def test_the_cv_table_of_all_is_a_run_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_TRACKING", "1")
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = _cfg(tmp_path, f"experiment.tracking_uri={uri}")
    (tmp_path / "report.md").write_text("| step | CV |\n")
    steps = [
        ("raw segmentation @0.5", 0.85, "OOF"),
        ("+ pseudo-labels", None, "off"),
        ("= final (the submission's policy)", 0.86, "nested"),
    ]
    assert tracking.log_report(cfg, steps, tmp_path / "report.md")
    run = _runs(uri, cfg.experiment.name).iloc[0]
    assert run["tags.mlflow.runName"] == "report" and run["metrics.cv/final the submissions policy"] == 0.86
    assert run["metrics.cv/raw segmentation 0.5"] == 0.85 and "metrics.cv/pseudo-labels" not in run

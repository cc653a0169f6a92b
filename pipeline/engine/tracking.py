"""Experiment tracking: every finished stage run, and the per-step CV table of `all`, logged to
MLflow with a local SQLite store, so that `mlflow ui --backend-store-uri sqlite:///data/artifacts/mlflow.db`
shows runs side by side.

MLflow rather than TensorBoard: a run here is a stage with a config, a table of figures and some
plots, which MLflow's run table compares across experiments and filters by config value;
TensorBoard is built for curves of one training job. Each stage run is an MLflow run of the
experiment `experiment.name`: its resolved config as params, its manifest metrics, each fold's
epoch curves (`metrics.csv`, step = epoch), its plots, config.yaml and manifest.json. The store is
written after the stage's manifest; a store that cannot be opened or written costs one warning,
never the run. `experiment.tracking: false` (or PIPELINE_TRACKING=0, which the tests set)
switches it off; it is in no stage key."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import typed
from pipeline.config.schema import Config
from pipeline.core import distributed, fileio

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)
_BATCH = 100  # MLflow's log_batch takes at most 100 params (and 1000 metrics) per call
_warned: set[str] = set()


def enabled(cfg: Config) -> bool:
    return cfg.experiment.tracking and os.environ.get("PIPELINE_TRACKING", "1") != "0" and distributed.is_main()


def store_uri(cfg: Config) -> str:
    """The MLflow tracking URI: experiment.tracking_uri, else a SQLite file in the artifacts folder."""
    return cfg.experiment.tracking_uri or f"sqlite:///{Path(cfg.experiment.artifacts).resolve() / 'mlflow.db'}"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf}."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def _name(key: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, _ - . / and spaces)."""
    return re.sub(r"[^\w\-./ ]", "_", key)


def _numbers(metrics: dict) -> dict[str, float]:
    out = {}
    for key, value in flatten(metrics).items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[_name(key)] = float(value)
    return out


def _client(cfg: Config) -> tuple[MlflowClient, str]:
    """The store's client and the experiment's id (created with its artifacts beside the store)."""
    for noisy in ("alembic", "mlflow"):  # schema migrations and store notices at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient  # here: importing MLflow takes seconds

    client = MlflowClient(tracking_uri=store_uri(cfg))
    name = cfg.experiment.name
    found = client.get_experiment_by_name(name)
    if found is not None:
        return client, found.experiment_id
    where = Path(cfg.experiment.artifacts).resolve() / "mlflow-artifacts" / name
    return client, client.create_experiment(name, artifact_location=where.as_uri())


def _log_run(cfg: Config, run_name: str, tags: dict[str, str], metrics: dict[str, float], curves: list, files: list[Path]) -> str:
    from mlflow.entities import Metric, Param

    client, experiment = _client(cfg)
    run = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
    now = int(time.time() * 1000)
    params = [Param(_name(k), str(v)[:6000]) for k, v in flatten(typed.to_dict(cfg)).items()]
    values = [Metric(k, v, now, 0) for k, v in metrics.items()] + [Metric(k, v, now, step) for k, v, step in curves]
    for start in range(0, max(len(params), len(values)), _BATCH):
        client.log_batch(run, metrics=values[start : start + _BATCH], params=params[start : start + _BATCH])
    for path in files:
        client.log_artifact(run, str(path))
    client.set_terminated(run)
    return run


def _curves(folder: Path) -> list[tuple[str, float, int]]:
    """(name, value, epoch) of every epoch row of every metrics.csv under the stage folder."""
    out = []
    for csv in sorted(folder.glob("**/metrics.csv")):
        table = fileio.read_csv(csv)
        if "epoch" not in table:
            continue
        rel = csv.parent.relative_to(folder).as_posix()
        for column in table.columns.drop("epoch"):
            for epoch, value in zip(table["epoch"], table[column], strict=True):
                if isinstance(value, int | float) and math.isfinite(value):
                    out.append((_name(f"{rel}/{column}" if rel != "." else column), float(value), int(epoch)))
    return out


def _safely(what: str, fn, *args) -> str | None:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 (a tracking store must never fail a run)
        if what not in _warned:
            _warned.add(what)
            logger.warning(f"experiment tracking off for this run ({what}): {type(exc).__name__}: {exc}")
        return None


def log_stage(cfg: Config, stage: str, key: str, folder: Path, metrics: dict, seconds: float) -> str | None:
    """Log one finished stage run; returns the MLflow run id (None when off or the store failed)."""
    if not enabled(cfg):
        return None
    tags = {"stage": stage, "key": key, "folder": str(folder), "config": cfg.source}
    numbers = _numbers(metrics) | {"seconds": round(seconds, 3)}
    files = [folder / n for n in ("config.yaml", "manifest.json") if (folder / n).exists()] + sorted(folder.glob("*.png"))
    return _safely(store_uri(cfg), lambda: _log_run(cfg, f"{stage}-{key}", tags, numbers, _curves(folder), files))


def log_report(cfg: Config, steps: list[tuple[str, float | None, str]], report: Path | None) -> str | None:
    """Log the per-step CV table of an `all` run (one metric per step) and its report.md."""
    if not enabled(cfg):
        return None
    # "+ classifier gating" -> "cv/classifier gating", "= final (the submission's policy)" -> "cv/final the submissions policy"
    numbers = {"cv/" + re.sub(r"[^\w\-. ]", "", name.lstrip("+= ")).strip(): float(value) for name, value, _ in steps if value is not None}
    files = [report] if report is not None and report.exists() else []
    tags = {"stage": "report", "config": cfg.source}
    return _safely(store_uri(cfg), lambda: _log_run(cfg, "report", tags, numbers, [], files))

"""Python API for notebooks and scripts: load a config, run stages, open artifacts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from pipeline.bundle import build as bundle_mod
from pipeline.bundle import planner
from pipeline.bundle.build import Sources
from pipeline.config import loader as config_mod
from pipeline.config import zoo
from pipeline.config.schema import Config
from pipeline.core import distributed, logs, paths
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.data.tables import fold_model_paths
from pipeline.engine import cache, foldrun
from pipeline.inference.contract import fitted_models
from pipeline.inference.ensemble_io import model_folders
from pipeline.inference.fold_models import classifier_paths
from pipeline.init.make import InitArgs, init
from pipeline.neighbours.mosaic_context import Mosaic
from pipeline.stages import GRAPH
from pipeline.submission.binary import check_submission, read_submission, score_submission  # noqa: F401  (part of the API)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Typed config from an experiment YAML plus 'a.b=value' overrides."""
    return config_mod.load(paths.resolve(path), overrides)


def run(cfg: Config, stage: str, force: bool = False, folds: list[int] | None = None) -> Path:
    """Run a stage (and, from cache, what it reads); returns its artifact folder. Progress goes
    to stdout unless the `pipeline` logger was configured already.

    `folds`: only these folds of a stage trained fold by fold (classify, segment, pseudo, distill), beside
    other such runs on other GPUs or machines sharing the artifacts folder; the stage stays
    unfinished until a run without `folds` keeps every finished fold, merges and scores them."""
    logs.setup()
    distributed.setup(cfg.experiment.device)  # a no-op outside torchrun
    if folds is not None:
        return foldrun.run_folds(GRAPH, cfg, stage, folds, force=force)[0]
    return cache.run_stage(GRAPH, cfg, stage, force=force)[0]


def artifact(cfg: Config, stage: str) -> Path:
    """Folder of a finished stage for this config; fails with the command to run if missing."""
    return cache.load_upstream(GRAPH, cfg, stage)


def manifest(cfg: Config, stage: str) -> dict:
    return cache.read_manifest(artifact(cfg, stage)) or {}


def bundle_sources(cfg: Config) -> Sources:
    """The finished stage folders and fitted models (pipeline/inference/contract.py) an offline
    bundle of this config is made from: every ensemble.models entry, a zoo member or the
    distilled student included."""
    own = {stage for stage, model in map(zoo.parse, cfg.ensemble.models) if model == zoo.BASE}
    names = ["ingest", "folds", "classify", "scorer", *sorted(own)]
    try:
        up = {name: cache.load_upstream(GRAPH, cfg, name) for name in names}
        up |= {entry: cache.load_upstream(GRAPH, sub, stage) for entry, (sub, stage) in zoo.upstream(cfg).items()}
        models = fitted_models(cfg, model_folders(cfg.ensemble.models, up))
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    return Sources(models, up["classify"], up["scorer"], up["ingest"], up["folds"])


def bundle(cfg: Config, out: str | Path, export: str | None = None, wheels: bool = False) -> dict:
    """Write the offline bundle of this config's finished run into `out` (pipeline/bundle/build.py);
    returns its manifest."""
    return bundle_mod.build(cfg, bundle_sources(cfg), Path(out), export=export, wheels=wheels)


def plan(
    cfg: Config, budget: str, device: str | None = None, bundle_dir: str | Path | None = None, n_test: int | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """The time-budget planner (pipeline/bundle/planner.py): every (models, views, folds) choice with
    its expected test time on this machine and its OOF score, and the best that fits `budget`
    ('2h', '90m', seconds) for `n_test` test images (default: the local test folder's count; a
    hidden test set is often larger); with `bundle_dir`, the choice is written into that bundle."""
    seconds = planner.parse_budget(budget)
    if device:
        cfg = dataclasses.replace(cfg, experiment=dataclasses.replace(cfg.experiment, device=device))
    src = bundle_sources(cfg)
    test = ArrayStore(cache.load_upstream(GRAPH, cfg, "ingest_test"), "test_images")
    classifier = [] if cfg.classify.seg_head or not cfg.classify.enabled else classifier_paths(fold_model_paths(src.classify))
    grown = next((m.cfg for m in src.models.values() if m.context is not None), None)  # the search it trained with
    mosaic = None if grown is None else Mosaic.open(cache.load_upstream(GRAPH, grown, "mosaic"), test, ArrayStore(src.ingest, "images"))
    measured = planner.measure(cfg, src.models, (src.ingest, src.folds), test, classifier, mosaic)
    plans = planner.table(measured, n_test or len(test), cfg.ensemble.adabn, list(cfg.segment.train.tta), cfg.ensemble.fit_weights)
    pick = planner.choose(plans, seconds)
    if bundle_dir is not None:
        info = {"budget_s": seconds, "device": str(cfg.experiment.device), "n_test": n_test or len(test)}
        bundle_mod.replan(Path(bundle_dir), cfg, measured, pick, info)
    return plans, pick


def init_config(args: InitArgs) -> dict:
    """`python -m pipeline init` from Python: fingerprint a dataset, write a config sized to a
    time budget (pipeline/init/make.py); returns {config, fingerprint, plan, estimate}."""
    return init(args)

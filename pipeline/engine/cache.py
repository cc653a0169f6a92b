"""Stage keys, artifact folders, manifests and the skip/rerun logic.

A stage's key hashes the config sections it reads, the keys of its upstream stages and a
fingerprint of the external files it reads. Its folder is `<artifacts>/<experiment>/<stage>-<key>`.
`manifest.json` is written last, by atomic rename: a folder without one (a crash, a kill)
is never taken as finished, but a stage may resume from what it left there. A stage runs under an
exclusive lock of its folder (pipeline.core.locks), and a --force rerun keeps the last result aside
until it succeeds (pipeline.engine.previous).

Fold-parallel runs of one stage (`--fold K`) are pipeline.engine.foldrun's; data-parallel runs under
torchrun are described at run_stage.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import loader as config_mod
from pipeline.config.schema import Config
from pipeline.core import distributed, fileio, locks, paths
from pipeline.core.errors import UserError
from pipeline.engine import manifest, previous, tracking
from pipeline.engine.graph import Graph, Stage, model_memo

logger = logging.getLogger(__name__)

MANIFEST = manifest.MANIFEST


@dataclass
class Context:
    """What a stage function gets: the config, its own folder and its upstream folders."""

    cfg: Config
    stage: str
    key: str
    dir: Path
    upstream: dict[str, Path]
    material: dict[str, Any]  # what the key hashes (fold reuse derives training keys from it)
    graph: Graph  # the stage table it runs in
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # a --force rerun: recompute everything, reuse nothing
    only_folds: list[int] | None = None  # a fold-parallel run (--fold): these folds, no merge

    @property
    def stops_before_merge(self) -> bool:
        """Whether the stage returns once its folds are trained: a fold-parallel run, or a
        torchrun process other than rank 0 (rank 0 merges, scores and writes)."""
        return self.only_folds is not None or not distributed.is_main()

    def folds_to_run(self, configured: list[int]) -> list[int]:
        """The folds this run trains: every configured fold, or the --fold ones among them."""
        if self.only_folds is None:
            return list(configured)
        missing = sorted(set(self.only_folds) - set(configured))
        if missing:  # foldrun checks the config first; this guards the folds table itself
            raise UserError(f"{self.stage}: fold {missing[0]} is not among its folds {list(configured)}")
        return [k for k in configured if k in self.only_folds]


def stage_dir(graph: Graph, cfg: Config, name: str, key: str | None = None) -> Path:
    key = key or graph.stage_key(cfg, name)
    return paths.stage_dir(cfg.experiment.artifacts, cfg.experiment.name, name, key)


def read_manifest(folder: Path) -> dict | None:
    """The parsed manifest, or None: no manifest, or one that is not a whole JSON object."""
    found = fileio.read_json(folder / MANIFEST)
    return found if isinstance(found, dict) else None


def finished(folder: Path) -> bool:
    return read_manifest(folder) is not None


def is_done(graph: Graph, cfg: Config, name: str) -> bool:
    return read_manifest(stage_dir(graph, cfg, name)) is not None


def status(graph: Graph, cfg: Config) -> list[tuple[str, str, str]]:
    """(stage, state, key) for each stage: done, previous (its complete copy waits in
    `.previous`, put back at the next start), partial (no manifest), stale or missing."""
    rows = []
    exp_dir = paths.experiment_dir(cfg.experiment.artifacts, cfg.experiment.name)
    memo: dict = {}
    for name in graph:
        key = graph.stage_key(cfg, name, memo)
        folder = stage_dir(graph, cfg, name, key)
        if read_manifest(folder) is not None:
            state = "done"
        elif read_manifest(previous.backup_of(folder)) is not None:
            state = "previous"
        elif folder.exists():
            state = "partial"
        elif any(read_manifest(p) for p in exp_dir.glob(f"{name}-*") if p.is_dir()):
            state = "stale"
        else:
            state = "missing"
        rows.append((name, state, key))
    return rows


@dataclass(frozen=True)
class _Job:
    """One stage to run or read, with what its run needs."""

    graph: Graph
    cfg: Config
    stage: Stage
    key: str
    folder: Path
    upstream: dict[str, Path]
    force: bool
    memo: dict

    def context(self) -> Context:
        material = self.graph.key_material(self.cfg, self.stage.name, self.memo)
        return Context(self.cfg, self.stage.name, self.key, self.folder, self.upstream, material, self.graph, force=self.force)


def run_stage(graph: Graph, cfg: Config, name: str, force: bool = False, keys: dict[str, str] | None = None) -> tuple[Path, bool]:
    """Run one stage (its upstream first, from cache when done). Returns (folder, ran).

    `keys` memoises stage keys for this cfg across calls (e.g. every stage of one `all` run):
    without it, each upstream path of the stage graph would fingerprint the input files again.

    Under torchrun every process walks the same stage graph in the same order: a training stage
    runs on all of them (rank 0 decides whether it must run, takes the locks and writes; the
    others follow it), any other stage on rank 0 alone while the rest wait."""
    memo: dict = {} if keys is None else keys
    stage = graph.get(name)
    upstream = {u: run_stage(graph, cfg, u, keys=memo)[0] for u in stage.upstream}
    for model, (sub, sub_stage) in (stage.models(cfg) if stage.models else {}).items():
        upstream[model] = run_stage(graph, sub, sub_stage, keys=model_memo(memo, model))[0]
    key = graph.stage_key(cfg, name, memo)
    job = _Job(graph, cfg, stage, key, stage_dir(graph, cfg, name, key), upstream, force, memo)
    if not distributed.active():
        return job.folder, _execute(job)
    if not stage.trains:
        return job.folder, distributed.on_main(lambda: _execute(job)) and distributed.is_main()
    if distributed.is_main():
        ran = _execute(job, decide=distributed.broadcast)
    elif ran := distributed.broadcast(None):  # rank 0's decision: whether the stage runs
        # Its training loops run alongside rank 0's, which writes everything (the stage
        # function asks pipeline.core.distributed where it must).
        job.stage.fn(job.context())
    if ran:
        distributed.barrier()  # the others wait for rank 0's manifest
    return job.folder, ran and distributed.is_main()


def _execute(job: _Job, decide: Callable[[bool], bool] = bool) -> bool:
    """Run the stage into its folder unless it is finished; True when it ran. `decide` passes
    the decision on (to the other processes of a torchrun run)."""
    folder = job.folder
    if not job.force and finished(folder) and not previous.backup_of(folder).exists():
        return decide(False)  # a finished folder is only read: no lock
    with contextlib.ExitStack() as held:
        # Read locks on the upstream folders: a --force rerun of one of them must not rename it
        # away while this stage reads it (and this stage must not start during such a rerun).
        held.enter_context(locks.read_locks(job.upstream.values()))
        held.enter_context(locks.folder_lock(folder))  # LockedError when another process works in it
        previous.settle(folder, finished)
        if not decide(job.force or not finished(folder)):
            return False
        for path in fileio.sweep_stale_temps(folder) if folder.exists() else []:
            logger.info(f"{folder.name}: deleted {path.relative_to(folder)}, left by a killed process")
        _run(job.context(), job.stage)
    return True


def _run(ctx: Context, stage: Stage) -> None:
    """Run the stage into ctx.dir and write its manifest (the folder's lock is held)."""
    folder, backup = ctx.dir, previous.backup_of(ctx.dir)
    if ctx.force and folder.exists():
        folder.rename(backup)  # the last result stays aside until the new manifest is written
    start = time.perf_counter()
    try:
        # The folder is created lazily by the stage so that input errors leave nothing behind.
        metrics = stage.fn(ctx) or {}
        folder.mkdir(parents=True, exist_ok=True)
        fileio.write_text(folder / "config.yaml", config_mod.dump(ctx.cfg))
        seconds = time.perf_counter() - start
        manifest.write(ctx, ctx.material, seconds, metrics)
    except BaseException:  # SIGTERM and SIGHUP arrive as SystemExit (see __main__)
        previous.put_back(folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)  # only now: the new result is complete
    tracking.log_stage(ctx.cfg, ctx.stage, ctx.key, folder, metrics, seconds)


def load_upstream(graph: Graph, cfg: Config, name: str) -> Path:
    """Folder of a finished stage, for notebooks and later stages; fails if not done."""
    folder = stage_dir(graph, cfg, name)
    if read_manifest(folder) is None:
        raise FileNotFoundError(
            f"stage '{name}' has no finished artifacts at {folder}; run: python -m pipeline {name} --config {cfg.source}"
        )
    return folder

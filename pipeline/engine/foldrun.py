"""Fold-parallel runs: `python -m pipeline STAGE --fold K` on several GPUs or machines sharing
one artifacts folder.

Fold-parallel runs of a fold-trained stage (classify, segment, pseudo, distill) share its folder: each
holds a shared lock of the stage folder and the exclusive lock of its own fold, trains and
predicts only its folds, and leaves the folder unfinished (no merge, no score, no manifest). A
later run of the whole stage takes the exclusive lock, keeps every finished fold, merges and
writes the manifest. Under torchrun a fold run is data-parallel like any training stage: rank
0 takes the locks and writes, the others follow.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.config import typed
from pipeline.config.schema import Config
from pipeline.core import distributed, locks
from pipeline.core.errors import LockedError, UserError
from pipeline.engine import cache, previous
from pipeline.engine.graph import Graph

logger = logging.getLogger(__name__)

# Fold-parallel runs start together: an upstream stage that another one is running (locked) is
# waited for, polling, up to UPSTREAM_WAIT_S, then read from the cache.
UPSTREAM_WAIT_S = 24 * 3600.0
POLL_S = 1.5


def configured_folds(cfg: Config, stage: cache.Stage) -> list[int]:
    """The folds a fold-trained stage runs: its folds key, or all folds.n_folds when empty."""
    return list(typed.section(cfg, stage.folds_key)) or list(range(cfg.folds.n_folds))


def check_fold_stage(graph: Graph, name: str) -> None:
    """UserError unless `name` is a stage trained fold by fold (one that may run single folds)."""
    if name not in graph.fold_stages():
        raise UserError(f"--fold applies to the stages trained fold by fold ({', '.join(graph.fold_stages())}), not {name}")


def check_folds(graph: Graph, cfg: Config, name: str, folds: list[int], force: bool = False) -> None:
    """UserError (one line) unless `folds` may run alone: a fold-trained stage, each fold
    among its configured folds, and no --force."""
    check_fold_stage(graph, name)
    stage = graph.get(name)
    if not folds:
        raise UserError("--fold needs at least one fold number")
    if force:
        raise UserError(
            "--force cannot be combined with --fold: it would move the whole stage folder away from "
            "under the other fold runs; to retrain fold K, delete the folder fold<K> inside the stage folder "
            "and run --fold K again (or rerun the whole stage with --force)"
        )
    configured = configured_folds(cfg, stage)
    for k in folds:
        if k not in configured:
            where = f"{stage.folds_key}={list(typed.section(cfg, stage.folds_key))}"
            raise UserError(f"--fold {k}: not among the folds of {name} ({configured}; {where}, folds.n_folds={cfg.folds.n_folds})")


def _wait_unlocked(attempt: Callable[[], Any], what: str, wait_s: float) -> Any:
    """attempt() until it stops raising LockedError (another process runs `what`), polling
    every POLL_S seconds for at most wait_s; says once that it waits."""
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            return attempt()
        except LockedError as exc:
            if time.monotonic() >= deadline:
                raise
            if not told:
                logger.info(f"waiting for {what}: {exc}")
                told = True
            time.sleep(POLL_S)


def run_folds(
    graph: Graph,
    cfg: Config,
    name: str,
    folds: list[int],
    force: bool = False,
    keys: dict[str, str] | None = None,
    wait_s: float = UPSTREAM_WAIT_S,
) -> tuple[Path, bool]:
    """Train and predict only `folds` of a fold-trained stage, beside other such runs in the same
    folder, and leave the stage unfinished; an upstream stage another process is running is
    waited for (up to `wait_s` seconds). Returns (stage folder, ran)."""
    check_folds(graph, cfg, name, folds, force)
    memo: dict = {} if keys is None else keys
    stage = graph.get(name)
    if distributed.active():
        # Under torchrun a retry on rank 0 alone would put the processes' collectives out of step:
        # the upstream stages must be finished (or free), else exit 3 as for any locked stage.
        upstream = {u: cache.run_stage(graph, cfg, u, keys=memo)[0] for u in stage.upstream}
    else:
        upstream = {
            u: _wait_unlocked(lambda u=u: cache.run_stage(graph, cfg, u, keys=memo)[0], f"stage {u}", wait_s) for u in stage.upstream
        }
    key = graph.stage_key(cfg, name, memo)
    material = graph.key_material(cfg, name, memo)
    ctx = cache.Context(cfg, name, key, cache.stage_dir(graph, cfg, name, key), upstream, material, graph, only_folds=sorted(set(folds)))
    if not distributed.is_main():
        if distributed.broadcast(None):  # rank 0 holds the locks and found the folds to run
            stage.fn(ctx)
        return ctx.dir, False
    with contextlib.ExitStack() as held:
        held.enter_context(locks.read_locks(upstream.values()))  # as for a run of the whole stage
        ran = _run_folds(ctx, held, wait_s)
    return ctx.dir, ran


def _settle_for_folds(folder: Path, wait_s: float) -> None:
    """Resolve a `.previous` copy left by a killed --force rerun before fold runs share the
    folder: settling renames folders, so it needs the exclusive lock, taken briefly (waited for
    while other fold runs hold it; the first one to get it settles, the others find it done)."""

    def attempt() -> None:
        if previous.backup_of(folder).exists():
            with locks.folder_lock(folder):
                previous.settle(folder, cache.finished)

    _wait_unlocked(attempt, f"{folder.name} to settle its .previous copy", wait_s)


def _run_folds(ctx: cache.Context, held: contextlib.ExitStack, wait_s: float) -> bool:
    """A fold-parallel run in ctx.dir (the upstream read locks are in `held`): a shared lock of
    the stage folder, so that other fold runs work beside it while a run of the whole stage (an
    exclusive lock, e.g. --force, which renames the folder) cannot start under them, nor this one
    under it (LockedError). Each fold is trained under its own exclusive fold lock by the stage.

    No stale-temp sweep here: another host's live writer cannot be told from a dead one by its
    pid, and only the exclusive lock rules out live writers; the next run of the whole stage
    sweeps. Nothing is written at the stage level (config.yaml, manifest): the folder stays
    unfinished until a run of all folds merges and scores them."""
    folder = ctx.dir
    while True:
        _settle_for_folds(folder, wait_s)
        lock = contextlib.ExitStack()
        lock.enter_context(locks.folder_lock(folder, shared=True))
        if not previous.backup_of(folder).exists():  # a forced rerun killed in between: settle again
            held.enter_context(lock.pop_all())
            break
        lock.close()
    # Finished meanwhile by a run of the whole stage: nothing to do (told to the other ranks).
    if not distributed.broadcast(not cache.finished(folder)):
        return False
    ctx.graph.get(ctx.stage).fn(ctx)
    names = ", ".join(f"fold{k}" for k in ctx.only_folds)
    logger.info(f"{folder.name}: {names} finished; a run of {ctx.stage} without --fold keeps them, merges and writes the manifest")
    return True

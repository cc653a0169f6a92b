"""Stage keys, artifact folders, manifests and the skip/rerun logic.

A stage's key hashes the config sections it reads, the keys of its upstream stages and a
fingerprint of the external files it reads. Its folder is `<artifacts>/<experiment>/<stage>-<key>`.
`manifest.json` is written last, by atomic rename: a folder without one (a crash, a kill)
is never taken as finished, but a stage may resume from what it left there. A stage runs under an
exclusive lock of its folder (pipeline.locks), and a --force rerun keeps the last result aside
until it succeeds (pipeline.previous).

Fold-parallel runs (`--fold K`, run_stage(..., folds=[K])) of a fold-trained stage share its
folder: each holds a shared lock of the stage folder and the exclusive lock of its own fold,
trains and predicts only its folds, and leaves the folder unfinished (no merge, no score, no
manifest). A later run of the whole stage takes the exclusive lock, keeps every finished fold,
merges and writes the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import config as config_mod
from pipeline import fileio, locks, paths, previous
from pipeline.errors import LockedError, UserError
from pipeline.schema import Config

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PACKAGES = (
    "torch",
    "segmentation-models-pytorch",
    "timm",
    "albumentations",
    "numpy",
    "opencv-python-headless",
    "lightgbm",
    "scikit-learn",
    "pandas",
)


@dataclass
class Context:
    """What a stage function gets: the config, its own folder and its upstream folders."""

    cfg: Config
    stage: str
    key: str
    dir: Path
    upstream: dict[str, Path]
    material: dict[str, Any]  # what the key hashes (fold reuse derives training keys from it)
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    force: bool = False  # a --force rerun: recompute everything, reuse nothing
    only_folds: list[int] | None = None  # a fold-parallel run (--fold): these folds, no merge

    @property
    def partial(self) -> bool:
        """A fold-parallel run: the stage stops after its folds, before merging and scoring
        (the stage's manifest is written by a later run of all folds)."""
        return self.only_folds is not None

    def folds_to_run(self, configured: list[int]) -> list[int]:
        """The folds this run trains: every configured fold, or the --fold ones among them."""
        if self.only_folds is None:
            return list(configured)
        missing = sorted(set(self.only_folds) - set(configured))
        if missing:  # run_stage checks the config first; this guards the folds table itself
            raise UserError(f"{self.stage}: fold {missing[0]} is not among its folds {list(configured)}")
        return [k for k in configured if k in self.only_folds]


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: `fn(ctx) -> metrics` writes its artifacts into ctx.dir."""

    name: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    fn: Callable[[Context], dict] | str  # "module:function", imported on first use (keeps the CLI light)
    version: str = "1"
    inputs: Callable[[Config], dict] | None = None  # fingerprint of external files
    # Config values read only in some settings; hashed only when non-empty, so keys of the
    # usual setting do not change when such an option is added.
    extra: Callable[[Config], dict] | None = None
    doc: str = ""
    # The config key listing the folds it trains (empty = all folds.n_folds), for the stages
    # trained fold by fold; only those may run single folds (--fold).
    folds_key: str | None = None


STAGES: dict[str, Stage] = {}
# Config switches hashed only when on (a truthy value, or a sub-section whose `enabled` is true),
# by every stage whose hashed sections hold them: adding an opt-in option, off by default, keeps
# existing artifacts' keys.
OPT_IN: set[str] = set()


def register_opt_in(*switches: str) -> None:
    OPT_IN.update(switches)


def register(stage: Stage) -> Stage:
    STAGES[stage.name] = stage
    return stage


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; valid stages: {', '.join(STAGES)}")
    return STAGES[name]


def resolve_fn(fn: Callable[[Context], dict] | str) -> Callable[[Context], dict]:
    if callable(fn):
        return fn
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


def digest(obj: Any) -> str:
    """12-hex-digit hash of a JSON-able object (keys sorted): stage keys and similar."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stage_inputs(cfg: Config, stage: Stage) -> dict:
    return stage.inputs(cfg) if stage.inputs else {}


def _hashed_sections(cfg: Config, stage: Stage) -> dict:
    out = {s: config_mod.section(cfg, s) for s in stage.sections}
    for switch in sorted(OPT_IN):
        value = config_mod.section(cfg, switch)
        if value.get("enabled") if isinstance(value, dict) else value:
            continue
        for s, hashed in out.items():
            if switch.startswith(s + "."):
                *parents, leaf = switch[len(s) + 1 :].split(".")
                for part in parents:
                    hashed = hashed.get(part)
                    if hashed is None:  # an enclosing switch is off and already dropped
                        break
                else:
                    hashed.pop(leaf)
    return out


def key_material(cfg: Config, name: str, _memo: dict | None = None) -> dict:
    """Everything a stage's key hashes: own sections, seed, inputs, upstream keys."""
    stage = get_stage(name)
    material = {
        "stage": name,
        "version": stage.version,
        "seed": cfg.experiment.seed,
        "config": _hashed_sections(cfg, stage),
        "inputs": stage_inputs(cfg, stage),
        "upstream": {u: stage_key(cfg, u, _memo) for u in stage.upstream},
    }
    extra = stage.extra(cfg) if stage.extra else {}
    if extra:
        material["extra"] = extra
    return material


def stage_key(cfg: Config, name: str, _memo: dict | None = None) -> str:
    memo = {} if _memo is None else _memo
    if name not in memo:
        memo[name] = digest(key_material(cfg, name, memo))
    return memo[name]


def stage_dir(cfg: Config, name: str, key: str | None = None) -> Path:
    key = key or stage_key(cfg, name)
    return paths.stage_dir(cfg.experiment.artifacts, cfg.experiment.name, name, key)


def read_manifest(folder: Path) -> dict | None:
    """The parsed manifest, or None: no manifest, or one that is not a whole JSON object."""
    manifest = fileio.read_json(folder / MANIFEST)
    return manifest if isinstance(manifest, dict) else None


def _finished(folder: Path) -> bool:
    return read_manifest(folder) is not None


def is_done(cfg: Config, name: str) -> bool:
    return read_manifest(stage_dir(cfg, name)) is not None


def status(cfg: Config) -> list[tuple[str, str, str]]:
    """(stage, state, key) for each stage: done, previous (its complete copy waits in
    `.previous`, put back at the next start), partial (no manifest), stale or missing."""
    rows = []
    exp_dir = paths.experiment_dir(cfg.experiment.artifacts, cfg.experiment.name)
    memo: dict = {}
    for name in STAGES:
        key = stage_key(cfg, name, memo)
        folder = stage_dir(cfg, name, key)
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


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def _write_manifest(ctx: Context, material: dict, seconds: float, metrics: dict) -> None:
    manifest = {
        "stage": ctx.stage,
        "key": ctx.key,
        "seed": ctx.cfg.experiment.seed,
        "experiment": ctx.cfg.experiment.name,
        "config_file": ctx.cfg.source,
        "config": material["config"],
        "inputs": {
            "files": material["inputs"],
            "upstream": {u: str(p) for u, p in ctx.upstream.items()},
        },
        "upstream_keys": material["upstream"],
        "versions": package_versions(),
        "host": platform.node(),
        "timings": {
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "metrics": metrics,
        **ctx.extra_manifest,
    }
    fileio.write_json(ctx.dir / MANIFEST, manifest)


# Fold-parallel runs start together: an upstream stage that another one is running (locked) is
# waited for, polling, up to UPSTREAM_WAIT_S, then read from the cache.
UPSTREAM_WAIT_S = 24 * 3600.0
POLL_S = 1.5


def fold_stages() -> list[str]:
    return [s.name for s in STAGES.values() if s.folds_key]


def configured_folds(cfg: Config, stage: Stage) -> list[int]:
    """The folds a fold-trained stage runs: its folds key, or all folds.n_folds when empty."""
    return list(config_mod.section(cfg, stage.folds_key)) or list(range(cfg.folds.n_folds))


def check_fold_stage(name: str) -> None:
    """UserError unless `name` is a stage trained fold by fold (one that may run single folds)."""
    if name not in fold_stages():
        raise UserError(f"--fold applies to the stages trained fold by fold ({', '.join(fold_stages())}), not {name}")


def check_folds(cfg: Config, name: str, folds: list[int], force: bool = False) -> None:
    """UserError (one line) unless `folds` may run alone: a fold-trained stage, each fold
    among its configured folds, and no --force."""
    check_fold_stage(name)
    stage = get_stage(name)
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
            where = f"{stage.folds_key}={list(config_mod.section(cfg, stage.folds_key))}"
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


def run_stage(
    cfg: Config,
    name: str,
    force: bool = False,
    keys: dict[str, str] | None = None,
    folds: list[int] | None = None,
    wait_s: float = UPSTREAM_WAIT_S,
) -> tuple[Path, bool]:
    """Run one stage (its upstream first, from cache when done). Returns (folder, ran).

    `keys` memoises stage keys for this cfg across calls (e.g. every stage of one `all` run):
    without it, each upstream path of the stage graph would fingerprint the input files again.

    `folds` (a fold-parallel run): train and predict only these folds of a fold-trained stage,
    beside other such runs in the same folder, and leave the stage unfinished; an upstream stage
    another process is running is waited for (up to `wait_s` seconds)."""
    memo: dict = {} if keys is None else keys
    stage = get_stage(name)
    if folds is not None:
        check_folds(cfg, name, folds, force)
        upstream = {u: _wait_unlocked(lambda u=u: run_stage(cfg, u, keys=memo)[0], f"stage {u}", wait_s) for u in stage.upstream}
    else:
        upstream = {u: run_stage(cfg, u, keys=memo)[0] for u in stage.upstream}
    key = stage_key(cfg, name, memo)
    folder = stage_dir(cfg, name, key)
    if not force and _finished(folder) and not previous.backup_of(folder).exists():
        return folder, False  # a finished folder is only read: no lock
    with contextlib.ExitStack() as held:
        # Read locks on the upstream folders: a --force rerun of one of them must not rename it
        # away while this stage reads it (and this stage must not start during such a rerun).
        for up in upstream.values():
            held.enter_context(locks.folder_lock(up, shared=True))
        if folds is not None:
            return _run_folds(cfg, stage, folder, upstream, key, memo, sorted(set(folds)), held, wait_s)
        held.enter_context(locks.folder_lock(folder))  # LockedError when another process works in it
        previous.settle(folder, _finished)
        if not force and _finished(folder):
            return folder, False
        for path in fileio.sweep_stale_temps(folder) if folder.exists() else []:
            logger.info(f"{folder.name}: deleted {path.relative_to(folder)}, left by a killed process")
        material = key_material(cfg, name, memo)
        ctx = Context(cfg=cfg, stage=name, key=key, dir=folder, upstream=upstream, force=force, material=material)
        _run(ctx, stage)
    return folder, True


def _settle_for_folds(folder: Path, wait_s: float) -> None:
    """Resolve a `.previous` copy left by a killed --force rerun before fold runs share the
    folder: settling renames folders, so it needs the exclusive lock, taken briefly (waited for
    while other fold runs hold it; the first one to get it settles, the others find it done)."""

    def attempt() -> None:
        if previous.backup_of(folder).exists():
            with locks.folder_lock(folder):
                previous.settle(folder, _finished)

    _wait_unlocked(attempt, f"{folder.name} to settle its .previous copy", wait_s)


def _run_folds(
    cfg: Config,
    stage: Stage,
    folder: Path,
    upstream: dict[str, Path],
    key: str,
    memo: dict,
    folds: list[int],
    held: contextlib.ExitStack,
    wait_s: float,
) -> tuple[Path, bool]:
    """A fold-parallel run in `folder` (the upstream read locks are in `held`): a shared lock of
    the stage folder, so that other fold runs work beside it while a run of the whole stage (an
    exclusive lock, e.g. --force, which renames the folder) cannot start under them, nor this one
    under it (LockedError). Each fold is trained under its own exclusive fold lock by the stage.

    No stale-temp sweep here: another host's live writer cannot be told from a dead one by its
    pid, and only the exclusive lock rules out live writers; the next run of the whole stage
    sweeps. Nothing is written at the stage level (config.yaml, manifest): the folder stays
    unfinished until a run of all folds merges and scores them."""
    while True:
        _settle_for_folds(folder, wait_s)
        lock = contextlib.ExitStack()
        lock.enter_context(locks.folder_lock(folder, shared=True))
        if not previous.backup_of(folder).exists():  # a forced rerun killed in between: settle again
            held.enter_context(lock.pop_all())
            break
        lock.close()
    if _finished(folder):  # a run of the whole stage finished it meanwhile
        return folder, False
    material = key_material(cfg, stage.name, memo)
    ctx = Context(cfg=cfg, stage=stage.name, key=key, dir=folder, upstream=upstream, material=material, only_folds=folds)
    resolve_fn(stage.fn)(ctx)
    names = ", ".join(f"fold{k}" for k in folds)
    logger.info(f"{folder.name}: {names} finished; a run of {stage.name} without --fold keeps them, merges and writes the manifest")
    return folder, True


def _run(ctx: Context, stage: Stage) -> None:
    """Run the stage into ctx.dir and write its manifest (the folder's lock is held)."""
    folder, backup = ctx.dir, previous.backup_of(ctx.dir)
    if ctx.force and folder.exists():
        folder.rename(backup)  # the last result stays aside until the new manifest is written
    start = time.perf_counter()
    try:
        # The folder is created lazily by the stage so that input errors leave nothing behind.
        metrics = resolve_fn(stage.fn)(ctx) or {}
        folder.mkdir(parents=True, exist_ok=True)
        fileio.write_text(folder / "config.yaml", config_mod.dump(ctx.cfg))
        _write_manifest(ctx, ctx.material, time.perf_counter() - start, metrics)
    except BaseException:  # SIGTERM and SIGHUP arrive as SystemExit (see __main__)
        previous.put_back(folder)
        raise
    shutil.rmtree(backup, ignore_errors=True)  # only now: the new result is complete


def load_upstream(cfg: Config, name: str) -> Path:
    """Folder of a finished stage, for notebooks and later stages; fails if not done."""
    folder = stage_dir(cfg, name)
    if read_manifest(folder) is None:
        raise FileNotFoundError(
            f"stage '{name}' has no finished artifacts at {folder}; run: python -m pipeline {name} --config {cfg.source}"
        )
    return folder

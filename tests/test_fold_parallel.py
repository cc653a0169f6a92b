"""Fold-parallel runs (`--fold K`) sharing one artifacts folder: each holds a shared lock of the
stage folder and its own fold's lock, leaves the stage unfinished, and a later run of all folds
keeps every finished fold. Fast checks use a throwaway fold stage; one slow test runs two real
`python -m pipeline segment --fold K` processes on the smoke data."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, SMOKE_CFG
from test_cache import _cfg, dummies  # noqa: F401  (dummies: a fixture)

from pipeline.__main__ import main
from pipeline.core import errors, locks
from pipeline.engine import cache, foldrun, previous
from pipeline.stages import GRAPH

FOLDS = [0, 1, 2]  # the demo config's folds.n_folds = 3, segment.train.folds = []


class _Calls(list):
    """(only_folds, folds run) per call of a test stage; `graph`: the stages it runs in."""

    graph = GRAPH


@pytest.fixture
def fold_stage(dummies):  # noqa: F811
    """`t_fold` (reads pseudo.epochs, upstream t_up): writes fold<k>/done.txt for each fold it
    runs under the fold lock; records (only_folds, folds run) per call."""
    calls = _Calls()

    def fn(ctx: cache.Context) -> dict:
        ctx.dir.mkdir(parents=True, exist_ok=True)
        done = []
        for k in ctx.folds_to_run(FOLDS):
            folder = ctx.dir / f"fold{k}"
            with locks.fold_lock(folder):
                folder.mkdir(exist_ok=True)
                if not (folder / "done.txt").exists():  # a finished fold is kept
                    (folder / "done.txt").write_text(str(os.getpid()))
            done.append(k)
        calls.append((ctx.only_folds, done))
        return {} if ctx.stops_before_merge else {"folds": done}

    calls.graph = dummies.graph.with_stages(
        cache.Stage("t_fold", ("pseudo.epochs",), ("t_up",), fn, folds_key="segment.train.folds", doc="test: folds")
    )
    return calls


def test_fold_runs_leave_the_stage_unfinished_and_a_full_run_keeps_their_folds(tmp_path, fold_stage, dummies):  # noqa: F811
    g = fold_stage.graph
    cfg = _cfg(tmp_path)
    folder = cache.stage_dir(g, cfg, "t_fold")
    with locks.folder_lock(folder, shared=True):  # another fold run works in the folder meanwhile
        assert foldrun.run_folds(g, cfg, "t_fold", [1]) == (folder, True)
    assert foldrun.run_folds(g, cfg, "t_fold", [0]) == (folder, True)
    assert fold_stage == [([1], [1]), ([0], [0])]
    assert not cache.is_done(g, cfg, "t_fold") and not (folder / "config.yaml").exists()
    assert cache.is_done(g, cfg, "t_up") and dummies.calls["t_up"] == 1  # upstream runs as usual, once
    stamps = {k: (folder / f"fold{k}" / "done.txt").stat().st_mtime_ns for k in (0, 1)}
    assert cache.run_stage(g, cfg, "t_fold") == (folder, True)  # the whole stage: merges, manifest
    assert fold_stage[-1] == (None, FOLDS)
    assert {k: (folder / f"fold{k}" / "done.txt").stat().st_mtime_ns for k in (0, 1)} == stamps
    assert cache.read_manifest(folder)["metrics"] == {"folds": FOLDS}
    assert foldrun.run_folds(g, cfg, "t_fold", [2]) == (folder, False)  # finished: nothing to do
    assert len(fold_stage) == 3


def test_a_fold_run_and_a_full_run_exclude_each_other(tmp_path, fold_stage):
    g = fold_stage.graph
    cfg = _cfg(tmp_path)
    folder = cache.stage_dir(g, cfg, "t_fold")
    cache.run_stage(g, cfg, "t_up")
    with locks.folder_lock(folder, shared=True):  # a fold run holds the stage folder
        with pytest.raises(errors.LockedError, match="worked in by runs of single folds"):
            cache.run_stage(g, cfg, "t_fold")
    with locks.folder_lock(folder):  # a run of the whole stage (or a --force rerun) holds it
        with pytest.raises(errors.LockedError, match=f"{folder}: locked by pid {os.getpid()}"):
            foldrun.run_folds(g, cfg, "t_fold", [0])
    with locks.fold_lock(folder / "fold0"):  # another fold run trains fold 0
        with pytest.raises(errors.LockedError, match=f"{folder / 'fold0'}: locked by pid"):
            foldrun.run_folds(g, cfg, "t_fold", [0])
        foldrun.run_folds(g, cfg, "t_fold", [1])  # other folds are free
    assert fold_stage == [([1], [1])]


def test_a_fold_run_waits_for_an_upstream_stage_another_process_runs(tmp_path, fold_stage, dummies, monkeypatch, pipeline_logs):  # noqa: F811
    g = fold_stage.graph
    monkeypatch.setattr(foldrun, "POLL_S", 0.05)
    cfg = _cfg(tmp_path)
    up = cache.stage_dir(g, cfg, "t_up")
    result: dict = {}
    with locks.folder_lock(up):  # another fold run is running t_up
        worker = threading.Thread(target=lambda: result.update(out=foldrun.run_folds(g, cfg, "t_fold", [2])))
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and fold_stage == []
    worker.join(30)
    assert result["out"] == (cache.stage_dir(g, cfg, "t_fold"), True) and fold_stage == [([2], [2])]
    waits = [m for m in pipeline_logs() if m.startswith("waiting for stage t_up")]
    assert len(waits) == 1 and f"{up}: locked by pid {os.getpid()}" in waits[0]  # said once


def test_the_upstream_wait_gives_up_after_wait_s(tmp_path, fold_stage, monkeypatch):
    g = fold_stage.graph
    monkeypatch.setattr(foldrun, "POLL_S", 0.05)
    cfg = _cfg(tmp_path)
    up = cache.stage_dir(g, cfg, "t_up")
    with locks.folder_lock(up), pytest.raises(errors.LockedError, match=f"{up}: locked by pid"):
        foldrun.run_folds(g, cfg, "t_fold", [0], wait_s=0.2)
    assert fold_stage == []


def test_a_fold_run_settles_a_killed_forced_rerun_first(tmp_path, fold_stage, pipeline_logs):
    g = fold_stage.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_fold")
    folder.rename(previous.backup_of(folder))  # a --force rerun killed before it started anew
    assert foldrun.run_folds(g, cfg, "t_fold", [0]) == (folder, False)  # put back: finished
    assert cache.is_done(g, cfg, "t_fold") and not previous.backup_of(folder).exists()
    assert any("restored its last complete result" in m for m in pipeline_logs())
    assert len(fold_stage) == 1


def test_a_fold_run_does_not_sweep_temp_files(tmp_path, fold_stage):
    g = fold_stage.graph
    # A temp file's pid says nothing about a writer on another host sharing the folder.
    cfg = _cfg(tmp_path)
    foldrun.run_folds(g, cfg, "t_fold", [0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    temp = cache.stage_dir(g, cfg, "t_fold") / "fold1" / f".model.pt.tmp{int(dead.stdout)}"
    temp.parent.mkdir()
    temp.write_text("another host's live writer, or a dead one")
    foldrun.run_folds(g, cfg, "t_fold", [2])
    assert temp.exists()
    cache.run_stage(g, cfg, "t_fold")  # the whole stage, under the exclusive lock, sweeps
    assert not temp.exists()


def test_fold_checks(tmp_path, fold_stage):
    g = fold_stage.graph
    cfg = _cfg(tmp_path)
    with pytest.raises(errors.UserError, match="^--fold applies to the stages trained fold by fold .*, not t_up$"):
        foldrun.run_folds(g, cfg, "t_up", [0])
    with pytest.raises(errors.UserError, match=r"^--fold 3: not among the folds of t_fold \(\[0, 1, 2\]; segment.train.folds=\[\], "):
        foldrun.run_folds(g, cfg, "t_fold", [3])
    with pytest.raises(errors.UserError, match=r"segment.train.folds=\[0, 2\]"):
        foldrun.run_folds(g, _cfg(tmp_path, "segment.train.folds=[0,2]"), "t_fold", [1])
    with pytest.raises(errors.UserError, match="^--force cannot be combined with --fold"):
        foldrun.run_folds(g, cfg, "t_fold", [0], force=True)
    with pytest.raises(errors.UserError, match="at least one"):
        foldrun.run_folds(g, cfg, "t_fold", [])
    assert fold_stage == [] and not cache.stage_dir(g, cfg, "t_up").exists()  # checked before anything ran
    assert GRAPH.fold_stages()[:3] == ["classify", "segment", "pseudo"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["folds", "--fold", "0"],
            "error: --fold applies to the stages trained fold by fold (classify, segment, pseudo, distill), not folds",
        ),
        (["all", "--fold", "0"], "error: --fold applies to the stages trained fold by fold (classify, segment, pseudo, distill), not all"),
        (["segment", "--fold", "7"], "error: --fold 7: not among the folds of segment ([0, 1]; segment.train.folds=[], folds.n_folds=2)"),
        (["segment", "--fold", "0,x"], "error: --fold takes fold numbers (K or K,K2), got '0,x'"),
        (["pseudo", "--fold", "1", "--force"], "error: --force cannot be combined with --fold"),
        (["segment", "--model", "fpn"], "error: --model fpn: not a model of this config (segment.models); known: segment"),
        (["scorer", "--model", "segment"], "error: --model applies to segment, pseudo and status, not scorer"),
    ],
)
def test_cli_fold_errors_are_one_line_exit_2(tmp_path, smoke_overrides, capsys, args, message):
    sets = [a for o in smoke_overrides(artifacts=tmp_path / "artifacts") for a in ("--set", o)]
    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    logger = logging.getLogger("pipeline")  # main() points it at this test's captured stdout
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        assert main([*args, "--config", str(SMOKE_CFG), *sets]) == 2
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGHUP, old[1])
        logger.handlers[:], logger.level, logger.propagate = saved
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "artifacts").exists()  # nothing ran


def _cli(smoke_overrides, artifacts: Path, *args: str) -> list[str]:
    sets = [a for o in smoke_overrides(artifacts=artifacts) for a in ("--set", o)]
    return [sys.executable, "-m", "pipeline", *args, "--config", str(SMOKE_CFG), *sets]


def _fold_files(folder: Path) -> dict[str, tuple]:
    """(inode, mtime, bytes) of each fold's model.pt and fit.json."""
    out = {}
    for path in sorted([*folder.glob("fold*/model.pt"), *folder.glob("fold*/fit.json")]):
        st = path.stat()
        out[str(path.relative_to(folder))] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return out


@pytest.mark.slow
def test_two_fold_processes_then_a_full_run_reuses_both(tmp_path, smoke_overrides, smoke_cfg):
    artifacts = tmp_path / "artifacts"  # fresh: both processes start with nothing cached
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for k in (0, 1):
        with open(tmp_path / f"fold{k}.log", "wb") as log:
            procs.append(
                subprocess.Popen(_cli(smoke_overrides, artifacts, "segment", "--fold", str(k)), cwd=REPO, env=env, stdout=log, stderr=log)
            )
    codes = [p.wait(timeout=600) for p in procs]
    logs = [(tmp_path / f"fold{k}.log").read_text() for k in (0, 1)]
    assert codes == [0, 0], logs
    cfg = smoke_cfg(artifacts=artifacts)
    folder = cache.stage_dir(GRAPH, cfg, "segment")
    for k, log in enumerate(logs):
        assert f"[segment] fold{k} ran in " in log and str(folder) in log
    assert not cache.is_done(GRAPH, cfg, "segment") and not (folder / "oof.index.csv").exists()  # not merged
    assert cache.is_done(GRAPH, cfg, "ingest") and cache.is_done(GRAPH, cfg, "folds")
    before = _fold_files(folder)
    assert sorted(before) == ["fold0/fit.json", "fold0/model.pt", "fold1/fit.json", "fold1/model.pt"]
    final = subprocess.run(_cli(smoke_overrides, artifacts, "segment"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "[segment] ran in " in final.stdout
    assert _fold_files(folder) == before  # neither fold trained again (same inode, mtime, bytes)
    manifest = cache.read_manifest(folder)
    assert manifest["metrics"]["n_oof"] == 48 and set(manifest["metrics"]["fits"]) == {"fold0", "fold1"}
    for k, log in enumerate(logs):
        assert f"fold{k} epoch 1:" in log and f"fold{1 - k} epoch" not in log  # each trained its own fold
    assert " epoch " not in final.stdout + final.stderr  # the full run trained nothing


@pytest.mark.slow
def test_pseudo_fold_runs_then_a_full_run_keeps_their_models_and_labels(smoke_cfg, monkeypatch):
    from pipeline.stages import pseudo as pseudo_stage

    # Loose selection, so that each fold trains on pseudo-labelled images.
    cfg = smoke_cfg("pseudo.min_confident_share=0.0", "pseudo.prob_lo=1.0", "pseudo.max_images=3")
    folder = cache.stage_dir(GRAPH, cfg, "pseudo")
    for k in (0, 1):
        assert foldrun.run_folds(GRAPH, cfg, "pseudo", [k]) == (folder, True)
    assert not cache.is_done(GRAPH, cfg, "pseudo") and not (folder / "round1" / "oof.index.csv").exists()
    kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.glob("round1/fold*/*")) if p.suffix in (".pt", ".u8", ".csv")}
    assert {"model.pt", "oof.index.csv", "pseudo_masks.index.csv", "pseudo_masks.u8"} <= {p.name for p in kept if p.parent.name == "fold0"}

    def no_labelling(*args, **kwargs):
        raise AssertionError("labelled again")

    monkeypatch.setattr(pseudo_stage, "predict_test", no_labelling)
    assert cache.run_stage(GRAPH, cfg, "pseudo") == (folder, True)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept} == kept
    metrics = cache.read_manifest(folder)["metrics"]
    assert metrics["history"][1]["selected"] == {"fold0": 3, "fold1": 3}

"""Two processes never work in one stage folder or fold: locks, the CLI's exit code 3, and
per-process temp names. Uses test_cache's throwaway stages plus a slow one run in a subprocess
(tests/slow_stage.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cache import DEMO_CFG, REPO, _cfg, dummies  # noqa: F401  (dummies: a fixture)

from pipeline.__main__ import main
from pipeline.core import errors, locks
from pipeline.engine import cache
from pipeline.stages import GRAPH
from pipeline.training import reuse

SLOW_SCRIPT = Path(__file__).with_name("slow_stage.py")


def _cli_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["t_slow", "--config", str(DEMO_CFG), "--set", f"experiment.artifacts={tmp_path / 'artifacts'}", *extra]


class _Calls(list):
    """The folders a test stage ran in; `graph`: the pipeline's stages and that one."""

    graph = GRAPH


@pytest.fixture
def slow_calls():
    """Registers `t_slow` in this process (same key as tests/slow_stage.py's); counts its runs."""
    calls = _Calls()

    def fn(ctx: cache.Context) -> dict:
        calls.append(ctx.dir)
        ctx.dir.mkdir(parents=True, exist_ok=True)
        (ctx.dir / "done.txt").write_text("done")
        return {"n": len(calls)}

    calls.graph = GRAPH.with_stages(cache.Stage("t_slow", ("pseudo.rounds",), (), fn, doc="test: slow"))
    return calls


def start_slow(tmp_path: Path, folder: Path, *extra: str) -> subprocess.Popen:
    """tests/slow_stage.py in a subprocess, returned once its stage is mid-run (partial.txt)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "slow.log", "wb") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen([sys.executable, str(SLOW_SCRIPT), *_cli_args(tmp_path, *extra)], stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 60
    while not (folder / "partial.txt").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"slow stage did not start: {(tmp_path / 'slow.log').read_text()[-2000:]}")
        time.sleep(0.02)
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=30)


@pytest.mark.slow
def test_second_process_gets_locked_error_and_cli_exit_3(tmp_path, slow_calls, capsys):
    g = slow_calls.graph
    cfg = _cfg(tmp_path)
    folder = cache.stage_dir(g, cfg, "t_slow")
    proc = start_slow(tmp_path, folder)
    try:
        expected = f"{folder}: locked by pid {proc.pid} (host {platform.node()})"
        with pytest.raises(errors.LockedError) as info:
            cache.run_stage(g, cfg, "t_slow", force=True)
        assert str(info.value) == expected
        old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
        try:
            assert main(_cli_args(tmp_path), graph=g) == 3
        finally:
            signal.signal(signal.SIGTERM, old[0])
            signal.signal(signal.SIGHUP, old[1])
        assert expected in capsys.readouterr().err
        assert slow_calls == []  # neither attempt touched the folder
        assert (folder / "partial.txt").exists()
    finally:
        stop(proc)
    # the lock file lives beside the folder (created lazily, renamed on --force), not inside it
    assert folder.with_name(folder.name + ".lock").is_file()
    assert not (folder / ".lock").exists()
    # the kernel drops a killed holder's lock: the next run goes ahead and resumes the folder
    assert cache.run_stage(g, cfg, "t_slow")[1] and slow_calls == [folder]


def test_a_stage_does_not_start_while_its_finished_upstream_is_forced(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    up, _ = cache.run_stage(g, cfg, "t_up")
    with locks.folder_lock(up), pytest.raises(errors.LockedError, match=f"{up}: locked by pid {os.getpid()}"):
        cache.run_stage(g, cfg, "t_down")  # a --force rerun of t_up holds it: it may rename it away
    assert dummies.calls == {"t_up": 1, "t_down": 0}


def test_an_upstream_is_not_forced_while_a_stage_reads_it(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    up, _ = cache.run_stage(g, cfg, "t_up")
    with locks.folder_lock(up, shared=True):  # a running t_down reads it
        with pytest.raises(errors.LockedError, match="read by a running stage downstream of it"):
            cache.run_stage(g, cfg, "t_up", force=True)
        with locks.folder_lock(up, shared=True):  # readers do not exclude each other
            pass
    assert dummies.calls == {"t_up": 1, "t_down": 0}
    assert cache.run_stage(g, cfg, "t_up", force=True)[1]  # released on exit


def test_upstream_that_must_run_takes_its_own_lock(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    up = cache.stage_dir(g, cfg, "t_up")
    with locks.folder_lock(up), pytest.raises(errors.LockedError, match=f"{up}: locked by pid {os.getpid()}"):
        cache.run_stage(g, cfg, "t_down")
    assert dummies.calls == {"t_up": 0, "t_down": 0}
    assert cache.run_stage(g, cfg, "t_down")[1]  # released on exit


def test_fold_lock(tmp_path):
    stage = tmp_path / "segment-abc"  # not created yet: stage folders are created lazily
    fold0, fold1 = stage / "fold0", stage / "fold1"
    with locks.fold_lock(fold0) as lock_file:
        assert lock_file == stage / "fold0.lock" and not fold0.exists()
        assert json.loads(lock_file.read_text()) == {"pid": os.getpid(), "host": platform.node()}
        # flock locks belong to an open file, so a second open in this process contends too
        with pytest.raises(errors.LockedError, match=f"^{fold0}: locked by pid {os.getpid()} \\(host "):
            with locks.fold_lock(fold0):
                pass
        with locks.fold_lock(fold1):  # other folds are free
            pass
    with locks.fold_lock(fold0):  # released on exit
        pass


def _started_then_sleep(started) -> None:
    started.set()
    time.sleep(30)


def test_forked_child_does_not_keep_the_lock(tmp_path):
    # A DataLoader worker forked mid-stage shares the lock's open file: were it kept, a killed
    # run's workers would hold the folder locked until they notice their parent is gone.
    folder, fork = tmp_path / "stage-abc", multiprocessing.get_context("fork")
    started = fork.Event()
    with locks.folder_lock(folder):
        child = fork.Process(target=_started_then_sleep, args=(started,))
        child.start()
        assert started.wait(30)  # the child closes its copy as it starts, before any code of its own
    try:
        with locks.folder_lock(folder):  # free as soon as this process lets go
            pass
    finally:
        child.kill()
        child.join()


def _finished_fold(folder: Path, key: str) -> None:
    folder.mkdir(parents=True)
    for name in ("model.pt", "fit.json", "metrics.csv", "oof.npy"):
        (folder / name).write_text("{}")
    (folder / reuse.TRAIN_KEY).write_text(key)


def test_fold_reuse_temp_folder_is_per_process(tmp_path, monkeypatch):
    exp = tmp_path / "artifacts" / "demo"
    copied_into: set[str] = set()
    real = reuse.shutil.copy2
    monkeypatch.setattr(reuse.shutil, "copy2", lambda src, dst: copied_into.add(Path(dst).parent.name) or real(src, dst))
    _finished_fold(exp / "segment-old" / "fold0", "k0")
    new = exp / "segment-new"
    # another process copying fold0 into the same new folder at this moment
    theirs = new / ".fold0.reuse"
    theirs.mkdir(parents=True)
    (theirs / "model.pt").write_text("theirs, half copied")
    ctx = cache.Context(cfg=_cfg(tmp_path), stage="segment", key="new", dir=new, upstream={}, material={}, graph=GRAPH)
    source = reuse.reuse_fold(ctx, new / "fold0", "k0")
    assert source == exp / "segment-old" / "fold0"
    assert len(copied_into) == 1 and str(os.getpid()) in copied_into.pop()  # a temp of this process
    assert sorted(p.name for p in (new / "fold0").iterdir()) == ["fit.json", "metrics.csv", "model.pt", reuse.TRAIN_KEY]
    assert (theirs / "model.pt").read_text() == "theirs, half copied"  # not deleted nor renamed
    assert sorted(p.name for p in new.iterdir()) == [".fold0.reuse", "fold0"]  # ours is gone


def test_fold_reuse_skips_a_candidate_that_vanishes_mid_copy(tmp_path, monkeypatch):
    # A sibling renamed away (a --force rerun of it) while we copy: the copy moves on.
    exp = tmp_path / "artifacts" / "demo"
    _finished_fold(exp / "segment-a" / "fold0", "k0")
    _finished_fold(exp / "segment-b" / "fold0", "k0")
    real = reuse.shutil.copy2

    def copy2(src, dst):
        if "segment-a" in str(src):
            raise FileNotFoundError(src)
        return real(src, dst)

    monkeypatch.setattr(reuse.shutil, "copy2", copy2)
    new = exp / "segment-new"
    ctx = cache.Context(cfg=_cfg(tmp_path), stage="segment", key="new", dir=new, upstream={}, material={}, graph=GRAPH)
    assert reuse.reuse_fold(ctx, new / "fold0", "k0") == exp / "segment-b" / "fold0"
    assert sorted(p.name for p in new.iterdir()) == ["fold0"]

"""A --force rerun that dies (SIGKILL, SIGHUP, a crash) never costs the last complete result:
the next start of the stage puts `<folder>.previous` back or drops it, and says so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from test_cache import _cfg, dummies  # noqa: F401  (dummies: a fixture)
from test_locks import slow_calls, start_slow, stop  # noqa: F401  (slow_calls: a fixture)

from pipeline.engine import cache


def _backup(folder):
    return folder.with_name(folder.name + ".previous")


def _as_after_a_killed_forced_run(folder):
    """What a forced rerun SIGKILLed mid-stage leaves: the old result renamed, a partial folder."""
    folder.rename(_backup(folder))
    folder.mkdir()
    (folder / "killed.txt").write_text("half of the forced rerun")


def test_next_start_restores_the_previous_result(tmp_path, dummies, pipeline_logs):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_down")
    before = (folder / cache.MANIFEST).read_text()
    _as_after_a_killed_forced_run(folder)
    assert dict((s, st) for s, st, _ in cache.status(g, cfg))["t_down"] == "previous"
    again, ran = cache.run_stage(g, cfg, "t_down")
    logs = pipeline_logs()
    assert again == folder and not ran
    assert dummies.calls == {"t_up": 1, "t_down": 1}  # not recomputed
    assert (folder / cache.MANIFEST).read_text() == before and (folder / "down.txt").exists()
    assert not (folder / "killed.txt").exists() and not _backup(folder).exists()
    assert any("restored" in line and str(folder) in line for line in logs), logs


def test_forced_rerun_after_a_killed_one_keeps_the_last_complete_copy(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_down")
    before = (folder / cache.MANIFEST).read_text()
    _as_after_a_killed_forced_run(folder)
    dummies.fail_down = True
    with pytest.raises(RuntimeError, match="boom midway"):
        cache.run_stage(g, cfg, "t_down", force=True)
    assert (folder / cache.MANIFEST).read_text() == before  # the complete copy survived both runs
    assert not _backup(folder).exists()
    dummies.fail_down = False
    assert cache.run_stage(g, cfg, "t_down", force=True)[1]
    assert dummies.seen_partial == [False, False, False]  # each forced run started from a clean folder
    assert cache.is_done(g, cfg, "t_down") and not _backup(folder).exists()


def test_both_complete_keeps_the_current_one(tmp_path, dummies, pipeline_logs):  # noqa: F811
    g = dummies.graph
    # A forced rerun killed after writing its manifest, before deleting the backup.
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_up")
    shutil.copytree(folder, _backup(folder))
    (_backup(folder) / cache.MANIFEST).write_text('{"old": true}')
    current = (folder / cache.MANIFEST).read_text()
    assert not cache.run_stage(g, cfg, "t_up")[1]
    logs = pipeline_logs()
    assert (folder / cache.MANIFEST).read_text() == current and not _backup(folder).exists()
    assert any(".previous" in line for line in logs), logs


def test_a_partial_backup_is_put_back_when_nothing_replaced_it(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    # A forced rerun of a partial folder, killed before its stage created the new folder: the
    # next run resumes the old partial work (which may hold checkpoints).
    cfg = _cfg(tmp_path)
    dummies.fail_down = True
    with pytest.raises(RuntimeError):
        cache.run_stage(g, cfg, "t_down")
    folder = cache.stage_dir(g, cfg, "t_down")
    folder.rename(_backup(folder))
    dummies.fail_down = False
    assert cache.run_stage(g, cfg, "t_down")[1]
    assert dummies.seen_partial == [False, True]
    assert cache.is_done(g, cfg, "t_down") and not _backup(folder).exists()


def test_backup_is_deleted_only_after_the_new_manifest(tmp_path, dummies, monkeypatch):  # noqa: F811
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_up")
    real = shutil.rmtree

    def killed_at_backup_removal(path, *args, **kwargs):
        if str(path).endswith(".previous") and os.path.exists(path):
            raise KeyboardInterrupt  # stands for a SIGKILL at this point
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_at_backup_removal)
    with pytest.raises(KeyboardInterrupt):
        cache.run_stage(g, cfg, "t_up", force=True)
    monkeypatch.undo()
    assert cache.read_manifest(folder) is not None  # the new result was complete first
    assert not cache.run_stage(g, cfg, "t_up")[1] and dummies.calls["t_up"] == 2
    assert not _backup(folder).exists()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_signalled_forced_rerun_subprocess(tmp_path, slow_calls, sig):  # noqa: F811
    g = slow_calls.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_slow")
    before = (folder / cache.MANIFEST).read_text()
    proc = start_slow(tmp_path, folder, "--force")
    assert _backup(folder).is_dir()
    rc = stop(proc, sig)
    if sig == signal.SIGHUP:  # unwinds like SIGTERM: the handler puts the old result back
        assert rc == 128 + signal.SIGHUP
        assert (folder / cache.MANIFEST).read_text() == before and not _backup(folder).exists()
    else:
        assert rc == -signal.SIGKILL and cache.read_manifest(folder) is None
    assert not cache.run_stage(g, cfg, "t_slow")[1] and len(slow_calls) == 1
    assert (folder / cache.MANIFEST).read_text() == before and not _backup(folder).exists()
    assert not (folder / "partial.txt").exists()


def test_a_restart_deletes_temp_files_of_killed_writers(tmp_path, dummies):  # noqa: F811
    g = dummies.graph
    # A SIGKILL during an atomic write leaves its temp file (the clean-up never runs); the next
    # run of the stage deletes those of processes that are gone, and nothing of a live one.
    cfg = _cfg(tmp_path)
    folder = cache.stage_dir(g, cfg, "t_up")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / "fold0" / f".checkpoint.pt.tmp{int(dead.stdout)}"
    stale_dir = folder / f".fold1.tmp{int(dead.stdout)}.reuse"
    live = folder / f".checkpoint.pt.tmp{os.getppid()}"
    for path in (stale, live):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    stale_dir.mkdir()
    cache.run_stage(g, cfg, "t_up")
    assert not stale.exists() and not stale_dir.exists() and live.exists()

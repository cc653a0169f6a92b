"""Replacing a whole generated folder without ever deleting what the generator did not make.

A folder is built under a temp name unique to this process (fileio.temp_path) beside its
target and renamed into place; the target may be replaced only when it is empty or the
generator recognises it as its own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.fileio import temp_path


def check_replaceable(target: Path, ours: Callable[[Path], bool], what: str) -> None:
    """Raise UserError unless `target` is missing, an empty folder, or a folder `ours` says
    the generator made: `--out data` or `--out .` must never erase artifacts or a repository."""
    if not target.exists():
        return
    if not target.is_dir():
        raise UserError(f"{target}: exists and is not a folder; choose a new or empty folder for the {what}")
    if not any(target.iterdir()) or ours(target):
        return
    raise UserError(f"{target}: folder exists and is not a {what}; refusing to replace it, choose a new or empty folder")


def remove_stale(target: Path) -> None:
    """Delete temp and moved-aside folders that killed runs left beside `target`; only
    those whose process is gone, so a concurrent run keeps its own."""
    prefix = f".{target.name}.tmp"
    for path in target.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not fileio.pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def swap_in(tmp: Path, target: Path) -> None:
    """Rename the finished folder `tmp` to `target`. A non-empty folder cannot be renamed
    over, so the old one is first moved aside: at every moment the old or the new folder is
    complete on disk (never neither), and a failed second rename puts the old one back."""
    if not target.exists() or not any(target.iterdir()):
        os.replace(tmp, target)
        return
    old = temp_path(target, ".old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)

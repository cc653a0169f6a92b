"""Per-folder locks: two processes never work in one stage folder or fold (fold-parallel runs
share a stage folder, each in its own fold), and a stage's upstream folders are not rerun
(--force) under it while it reads them.

A lock is an `fcntl.flock` on `<folder>.lock`, beside the folder rather than in it: stage folders
are created lazily by their stage and renamed aside by --force, and the lock must outlive both.
The kernel drops the lock when its holder dies, even by SIGKILL, so a stale lock file is harmless;
it records the holder's pid and host only for the error message. Lock files are never deleted:
unlinking one while another process waits to open it would let two processes hold "the" lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.core import distributed
from pipeline.core.errors import LockedError

# Lock fds held by this process. A forked child (a DataLoader worker) shares their open files and
# so the locks, and would keep them after this process is killed: it closes its copies as it starts.
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in _HELD:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def lock_file(folder: Path) -> Path:
    """`<folder>.lock`, the sibling lock file of a stage folder or fold."""
    return folder.with_name(folder.name + ".lock")


def _holder(path: Path) -> str:
    # The holder writes its pid just after taking the lock: retry briefly if we came in between.
    for _ in range(20):
        try:
            info = json.loads(path.read_text())
            return f"pid {info['pid']} (host {info['host']})"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "pid ? (host ?)"


def _blocker(fd: int, path: Path, shared: bool) -> str:
    """Who holds the lock: a writer notes its pid in the file; readers cannot (there may be
    several), so a writer blocked by readers only is told so."""
    if not shared:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # succeeds when only readers hold it
        except BlockingIOError:
            pass
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return "read by a running stage downstream of it, or worked in by runs of single folds (--fold)"
    return f"locked by {_holder(path)}"


@contextlib.contextmanager
def folder_lock(folder: Path, shared: bool = False) -> Iterator[Path]:
    """Hold `<folder>.lock` for the block (yields its path): exclusively to work in the folder,
    shared to read it (many readers, no writer).

    Raises LockedError (`<folder>: locked by pid N (host H)`) at once when another process, or
    another open of the same file in this one, holds it incompatibly: waiting would only queue
    a duplicate.

    Under torchrun only rank 0 locks: the other processes work under its locks."""
    path = lock_file(folder)
    if not distributed.is_main():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, owner = os.open(path, os.O_RDWR | os.O_CREAT, 0o644), os.getpid()
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(f"{folder}: {_blocker(fd, path, shared)}") from None
        if not shared:  # readers leave the last writer's note alone
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": owner, "host": platform.node()}).encode())
        yield path
    finally:
        if os.getpid() == owner:  # a forked child leaving this block closed its copy already
            _HELD.discard(fd)
            os.close(fd)  # releases the lock


def read_locks(folders: Iterable[Path]) -> contextlib.ExitStack:
    """Shared locks on `folders` (a stage's upstream folders, while it reads them), held until
    the returned stack closes."""
    held = contextlib.ExitStack()
    try:
        for folder in folders:
            held.enter_context(folder_lock(folder, shared=True))
    except BaseException:
        held.close()
        raise
    return held


def fold_lock(folder: Path) -> contextlib.AbstractContextManager[Path]:
    """Lock of one fold folder inside a stage folder (`<stage>/<fold>.lock`), always exclusive.
    Under a run of the whole stage (the stage folder's exclusive lock) it cannot be contended;
    fold-parallel runs (`--fold`, a shared lock of the stage folder) rely on it so that two of
    them never train one fold."""
    return folder_lock(folder)

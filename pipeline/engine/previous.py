"""The copy a --force rerun keeps of a stage's last result, `<folder>.previous`, and its recovery.

A forced rerun renames the folder aside before its stage starts and deletes that copy only after
the new manifest is written; an error or a signal that unwinds (SIGTERM, SIGHUP, Ctrl-C) puts it
back at once. A SIGKILL, a power cut or a kill during the put-back leaves it behind, so the next
start of the stage, forced or not, settles it first (under the stage's lock). Whatever happens,
the last complete copy is never deleted.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

SUFFIX = ".previous"


def backup_of(folder: Path) -> Path:
    return folder.with_name(folder.name + SUFFIX)


def put_back(folder: Path) -> None:
    """Replace `folder` (partial or missing) by its backup, if there is one."""
    backup = backup_of(folder)
    if backup.exists():
        # Killed between the two steps, the next settle() does this again: the backup is intact.
        shutil.rmtree(folder, ignore_errors=True)
        backup.rename(folder)


def settle(folder: Path, finished: Callable[[Path], bool]) -> None:
    """Resolve a backup left by an interrupted forced rerun, saying what was done.

    The complete one wins, the current folder when both are; with neither complete, the current
    (newer) partial folder stays, and a backup with nothing in its place is put back so that the
    stage can resume what it holds (checkpoints)."""
    backup = backup_of(folder)
    if not backup.exists():
        return
    if finished(folder):
        shutil.rmtree(backup)
        logger.info(f"{folder}: complete; deleted {backup.name} left by a forced rerun stopped before its clean-up")
    elif finished(backup) or not folder.exists():
        put_back(folder)
        state = "its last complete result" if finished(folder) else "its partial work"
        logger.info(f"{folder}: restored {state} from {backup.name}, left by an interrupted forced rerun")
    else:
        shutil.rmtree(backup)
        logger.info(f"{folder}: deleted {backup.name} (not complete either) left by an interrupted forced rerun")

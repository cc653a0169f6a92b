"""Epoch checkpoints of the training loop: written crash-safely, the previous one kept beside
the newest, and loaded with `weights_only=True` so that a checkpoint can only ever hold
tensors and plain data (a tampered file is refused, never executed).

A kill can land anywhere, and a disk can hand back a truncated file: a checkpoint that cannot be
read is set aside as `<name>.corrupt` (kept for inspection, never read again) and training
resumes from the previous checkpoint, or from scratch when there is none.
"""

from __future__ import annotations

import errno
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core import fileio

logger = logging.getLogger(__name__)


def previous(path: Path) -> Path:
    """Where the checkpoint that `path` replaced is kept: checkpoint.pt -> checkpoint.prev.pt."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def plain(obj: Any) -> Any:
    """`obj` with numpy scalars turned into Python numbers (a task's validate may return them),
    which a weights_only load accepts."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save(obj: dict, path: Path) -> None:
    """Write `obj` to `path` (fsync'd, renamed into place) and keep the file it replaces as
    `previous(path)`. A kill between the two renames leaves only the previous one, which
    `find` falls back to."""
    with fileio.atomic_path(path) as tmp:
        torch.save(obj, tmp)
        if path.exists():
            os.replace(path, previous(path))


def _why(exc: Exception) -> str:
    if isinstance(exc, pickle.UnpicklingError):
        # torch's message goes on to explain how to load the file anyway: not advice to repeat.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = found.group(1) if found else "an object that is not a tensor or plain data"
        return f"refused: it holds {what}, which a checkpoint never does (loaded with weights_only)"
    first = str(exc).strip().splitlines()
    return f"unreadable ({type(exc).__name__}: {first[0] if first else ''})"


def find(path: Path, map_location: torch.device | str) -> tuple[Path, dict] | None:
    """(file, state) of the newest readable checkpoint among `path` and `previous(path)`, or
    None. Each one that cannot be read (truncated, corrupt, or holding anything but tensors and
    plain data) is renamed to `*.corrupt` with a warning, and the previous one is tried."""
    for candidate in (path, previous(path)):
        if not candidate.exists():
            continue
        try:
            state = torch.load(candidate, map_location=map_location, weights_only=True)
            if isinstance(state, dict):
                return candidate, state
            raise ValueError(f"holds a {type(state).__name__}, not a dict")
        except (MemoryError, PermissionError):
            raise  # the machine's trouble, not the file's: setting a good checkpoint aside loses work
        except OSError as exc:
            if exc.errno not in (None, errno.EINVAL):  # EINVAL: how torch reports a truncated file
                raise  # EIO, a network file system's hiccup: the file may be fine
            why = _why(exc)
        except Exception as exc:  # unpickling, zip or format errors: the file is unusable
            why = _why(exc)
        aside = candidate.with_name(candidate.name + ".corrupt")
        os.replace(candidate, aside)
        logger.warning("checkpoint %s %s; moved to %s, resuming from the previous checkpoint if any", candidate, why, aside.name)
    return None


def remove(path: Path) -> None:
    """Delete the checkpoint and its previous one (a finished fit needs neither)."""
    path.unlink(missing_ok=True)
    previous(path).unlink(missing_ok=True)

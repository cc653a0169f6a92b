"""Crash-safe writes and the one CSV reader: every artifact file goes through here.

A reader must never see half a file, and a killed writer must leave either the old file or
the new one: each write goes to a temp name unique to this process (two processes never share
one), is flushed to disk, and is renamed over the target in one step."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs a third of a second to import: the CLI's status and --help need none of it
    import pandas as pd


def temp_path(path: Path, suffix: str = "") -> Path:
    """A hidden sibling of `path` unique to this process (keeps `suffix`, e.g. '.png')."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "", fsync: bool = True) -> Iterator[Path]:
    """Yield a temp path to write to; on success it is fsync'd and renamed to `path`, on an
    error it is removed. For writers that take a path (torch.save, savefig, to_csv)."""
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        if fsync:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[Path], Any], suffix: str = "", fsync: bool = True) -> None:
    """Call `write(tmp)` and rename tmp over `path` (see atomic_path)."""
    with atomic_path(path, suffix, fsync) as tmp:
        write(tmp)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def write_csv(path: str | Path, df: pd.DataFrame, index: bool = False) -> None:
    atomic_write(path, lambda tmp: df.to_csv(tmp, index=index))


def save_npz(path: str | Path, **arrays: Any) -> None:
    """np.savez of `arrays`, written atomically (the suffix keeps numpy from appending one)."""
    import numpy as np  # lazily, as pandas above

    atomic_write(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")


def read_json(path: str | Path) -> Any | None:
    """Parsed JSON, or None when the file is missing or not valid JSON (an unfinished write
    of an older version, a truncated copy): a "finished" check must parse what it reads."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def read_csv(path: str | Path, **kwargs: Any) -> pd.DataFrame:
    """The project's CSV reader: ids stay strings and text such as `NA`, `null` or `None` is
    never turned into NaN (a Kaggle id can be any of those); only empty cells are missing."""
    kwargs.setdefault("keep_default_na", False)
    kwargs.setdefault("na_values", [""])
    import pandas as pd

    dtype = kwargs.pop("dtype", {})
    if isinstance(dtype, dict):
        dtype = {"id": str, **dtype}
    return pd.read_csv(path, dtype=dtype, **kwargs)


_TEMP = re.compile(r"^\..+\.tmp(\d+)")


def pid_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine (signal 0 only checks)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folder: Path) -> list[Path]:
    """Delete the temp files and folders under `folder` that a process no longer running left
    behind (a SIGKILL skips the clean-up of atomic_path); returns what was deleted. Call it only
    while holding the folder's lock, so that no live writer of another host is in there."""
    gone = []
    for path in sorted(Path(folder).rglob(".*.tmp*"), reverse=True):
        m = _TEMP.match(path.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            gone.append(path)
    return gone

"""Process defaults of issue 36: OpenMP's spin count set on import, progress bars only on a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core import progress

ROOT = Path(__file__).resolve().parent.parent
PRINT = "import os, pipeline; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"


def _env_after_import(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "PIPELINE_OMP_DEFAULTS")}
    out = subprocess.run(
        [sys.executable, "-c", PRINT], env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "10000 None"),  # the pipeline's default: spin briefly, then sleep
        ({"GOMP_SPINCOUNT": "5"}, "5 None"),  # the user's spin count wins
        ({"OMP_WAIT_POLICY": "PASSIVE"}, "None PASSIVE"),  # so does a wait policy
        ({"PIPELINE_OMP_DEFAULTS": "0"}, "None None"),  # libgomp's own default
    ],
)
def test_openmp_defaults_on_import(env, expected):
    assert _env_after_import(**env) == expected


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_on_a_terminal_only(monkeypatch):
    for stream, shown in ((io.StringIO(), False), (_Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress.bar(range(5), "decode")) == [0, 1, 2, 3, 4]
        assert ("decode" in stream.getvalue()) == shown


def test_progress_bar_is_silent_off_rank_0(monkeypatch):
    monkeypatch.setattr(sys, "stderr", _Terminal())
    monkeypatch.setattr(progress.distributed, "is_main", lambda: False)
    assert list(progress.bar(range(3), "predict")) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""

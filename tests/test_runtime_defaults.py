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


def test_bf16_auto_follows_the_instruction_set_onednn_may_use(monkeypatch):
    from pipeline.core import runtime

    if "avx512_bf16" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("this CPU has no native bf16")
    runtime.cpu_has_bf16.cache_clear()
    try:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # as on an AVX2-only CPU: fp32, not emulated bf16
        assert not runtime.cpu_has_bf16()
        runtime.cpu_has_bf16.cache_clear()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
        assert runtime.cpu_has_bf16()
        assert runtime.cpu_info()["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE_BF16" and runtime.cpu_info()["isa"] in ("avx512_bf16", "amx_bf16")
    finally:
        runtime.cpu_has_bf16.cache_clear()

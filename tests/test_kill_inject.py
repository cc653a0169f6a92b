"""bench/kill_inject.py on the smoke config: a run SIGKILLed 3 times (the whole process group) and
restarted each time ends with the submission of an uninterrupted run, byte for byte."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO, SMOKE_CFG, data_overrides

spec = importlib.util.spec_from_file_location("kill_inject", REPO / "bench" / "kill_inject.py")
assert spec is not None and spec.loader is not None
kill_inject = sys.modules["kill_inject"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(kill_inject)

pytestmark = pytest.mark.slow  # the smoke pipeline uninterrupted, then killed 3 times and restarted


def test_killed_run_recovers_the_same_submission(smoke_data: Path, tmp_path: Path) -> None:
    res = kill_inject.inject(str(SMOKE_CFG), 3, [*data_overrides(smoke_data), *FAST], seed=1, workdir=tmp_path / "ki")
    assert res.final_rc == 0
    assert len(res.kills) >= 1  # a kill whose restart ended first is not delivered (a loaded machine)
    assert res.recovered == len(res.kills)
    assert res.identical

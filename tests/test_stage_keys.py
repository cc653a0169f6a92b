"""The stage keys of the shipped configs are what tests/stage_keys.json lists: a change that
moves code (issue 34) or adds an option that is off must not invalidate anyone's artifacts.
Input-file fingerprints are left out, so that the list holds on a checkout without the data.
After a deliberate key change: .venv/bin/python bench/stage_keys.py --no-inputs --write tests/stage_keys.json"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("stage_keys", ROOT / "bench" / "stage_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_keys_of_the_shipped_configs_are_unchanged(monkeypatch):
    expected = json.loads((ROOT / "tests" / "stage_keys.json").read_text())
    bench = _bench()
    monkeypatch.setattr(bench.cache, "stage_inputs", bench.cache.stage_inputs)  # restored after the test
    found = bench.all_keys(no_inputs=True)
    assert sorted(found) == sorted(expected), "a config was added or removed: refresh tests/stage_keys.json"
    changed = [f"{c}:{s}" for c in expected for s in expected[c] if found[c].get(s) != expected[c][s]]
    assert not changed, f"stage keys changed: {changed}"

"""The stage keys of the shipped configs are what tests/stage_keys.json lists: a change that
moves code (issue 34) or adds an option that is off must not invalidate anyone's artifacts.
Input-file fingerprints are left out, so that the list holds on a checkout without the data.
After a deliberate key change: .venv/bin/python bench/stage_keys.py --no-inputs --write tests/stage_keys.json"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

from pipeline.engine.graph import Graph
from pipeline.stages import GRAPH

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("stage_keys", ROOT / "bench" / "stage_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_keys_of_the_shipped_configs_are_unchanged(monkeypatch):
    expected = json.loads((ROOT / "tests" / "stage_keys.json").read_text())
    bench = _bench()
    monkeypatch.setattr(bench.graph, "stage_inputs", bench.graph.stage_inputs)  # restored after the test
    found = bench.all_keys(no_inputs=True)
    assert sorted(found) == sorted(expected), "a config was added or removed: refresh tests/stage_keys.json"
    changed = [f"{c}:{s}" for c in expected for s in expected[c] if found[c].get(s) != expected[c][s]]
    assert not changed, f"stage keys changed: {changed}"


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        out += _leaves(value, path) if isinstance(value, dict) and value else [path]
    return out


def _under(key: str, sections: set[str]) -> bool:
    return any(key == s or key.startswith(s + ".") for s in sections)


def test_every_config_key_is_hashed_or_declared_not_hashed():
    """A key that no stage hashes must be declared so (pipeline/stages/__init__.py), with its
    reason: a new key then never changes or escapes every key by accident."""
    _check_declared(GRAPH)


def _check_declared(graph: Graph) -> None:
    from pipeline import api
    from pipeline.config import typed

    keys = _leaves(typed.to_dict(api.load_config(ROOT / "configs" / "base.yaml")))
    hashed = {s for stage in graph.stages.values() for s in stage.sections} | {"experiment.seed"}  # the seed: in every key
    loose = [k for k in keys if not _under(k, hashed) and not _under(k, graph.not_hashed)]
    assert not loose, f"keys neither hashed by a stage nor declared in NOT_HASHED: {loose}"
    both = [k for k in graph.not_hashed if _under(k, hashed)]
    assert not both, f"declared not hashed, but a stage hashes them: {both}"
    unknown = [
        k for k in (*graph.not_hashed, *graph.opt_in, *graph.unhashed) if k not in keys and not any(x.startswith(k + ".") for x in keys)
    ]
    assert not unknown, f"declared keys that are not config keys: {unknown}"


def test_an_undeclared_key_is_found():
    undeclared = dataclasses.replace(GRAPH, not_hashed=GRAPH.not_hashed - {"experiment.threads"})
    with pytest.raises(AssertionError, match="experiment.threads"):
        _check_declared(undeclared)

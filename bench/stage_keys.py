"""Every stage key of every shipped config, as JSON: {config: {stage: key}}.

A restructuring must leave these identical (issue 34). `--no-inputs` leaves the input-file
fingerprints out of the keys, so that the list can be computed on a clean checkout without the
datasets: tests/stage_keys.json holds that list and tests/test_stage_keys.py compares it. With
inputs (the default), every config's data must be present (the demo data generated, ../shared
linked, data/magnetic_tile_5class prepared).

    .venv/bin/python bench/stage_keys.py [--no-inputs] [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import api  # noqa: E402
from pipeline.engine import graph  # noqa: E402
from pipeline.stages import GRAPH  # noqa: E402


def all_keys(no_inputs: bool) -> dict[str, dict[str, str]]:
    """{config file name: {stage: key}} for each config in configs/ (base.yaml is the default experiment)."""
    if no_inputs:
        graph.stage_inputs = lambda cfg, stage: {}  # keys of the config and the graph alone
    out = {}
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = api.load_config(path)
        memo: dict = {}
        out[path.name] = {name: GRAPH.stage_key(cfg, name, memo) for name in GRAPH.stages}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-inputs", action="store_true", help="leave input-file fingerprints out of the keys")
    parser.add_argument("--write", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args()
    text = json.dumps(all_keys(args.no_inputs), indent=1, sort_keys=True) + "\n"
    if args.write:
        args.write.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()

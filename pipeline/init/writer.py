"""The plan as an experiment YAML: each section's values, the reasons above them, and a header
with the fingerprint's summary and the probe's figures. Checked by the config loader before it
is moved into place; never replaces a file."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from pipeline.config import loader
from pipeline.core.errors import UserError
from pipeline.core.fileio import temp_path
from pipeline.init.rules import Plan


def nested(plan: Plan, data: dict) -> dict:
    """The plan's dotted keys (and the data section) as one nested mapping."""
    out: dict = {"data": dict(data)}
    for c in plan.choices:
        node = out
        *parents, last = c.key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = c.value
    return out


def _reasons(plan: Plan, section: str) -> list[str]:
    return [f"# {c.key}: {c.reason}" for c in plan.choices if c.key.split(".")[0] == section]


def render(plan: Plan, data: dict, header: list[str]) -> str:
    """YAML text: the header, then each section under its reasons."""
    tree = nested(plan, data)
    order = ["experiment", "data", "folds", "classify", "segment", "pseudo", "ensemble", "scorer", "submit"]
    lines = [f"# {h}" if h else "#" for h in header] + [""]
    for section in sorted(tree, key=lambda s: order.index(s) if s in order else len(order)):
        lines += _reasons(plan, section)
        lines += yaml.safe_dump({section: tree[section]}, sort_keys=False, default_flow_style=None, width=140).splitlines()
    return "\n".join(lines) + "\n"


def refuse_existing(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            raise UserError(f"{p}: already exists; init never overwrites a file (give another --out)")


def write_config(text: str, out: Path) -> None:
    """Validate `text` as a config (every key, type and value), then move it to `out`."""
    refuse_existing(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(out, ".yaml")
    tmp.write_text(text)
    try:
        loader.load(tmp)
        # link() fails where `out` appeared meanwhile: a file another process wrote is kept.
        os.link(tmp, out)
    except FileExistsError:
        raise UserError(f"{out}: already exists; init never overwrites a file") from None
    finally:
        tmp.unlink(missing_ok=True)

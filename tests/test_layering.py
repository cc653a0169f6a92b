"""The import graph keeps its layers: stages call library code; no stage imports another
stage or the API, and no library module imports a stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pipeline"
# The layer above the stages: the CLI, the Python API, and the notebook helpers built on it.
ENTRY = {"pipeline.api", "pipeline.__main__", "pipeline.explore"}


def _module(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, `from pipeline import x` counted as pipeline.x."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("pipeline")}


def _is_stage(name: str) -> bool:
    return name.startswith("pipeline.stages") and name != "pipeline.stages"


def violations(pkg: Path = PKG) -> list[str]:
    bad = []
    for path in sorted(pkg.rglob("*.py")):
        name = _module(path, pkg)
        if name in ENTRY:
            continue
        for target in sorted(imports(path)):
            if name.startswith("pipeline.stages"):
                if _is_stage(target) or target == "pipeline.api":
                    bad.append(f"{name} imports {target}")
            elif target.startswith("pipeline.stages") or target == "pipeline.api":
                bad.append(f"library module {name} imports {target}")
    return bad


def test_no_stage_or_api_import_below_the_entry_layer():
    assert violations() == []


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("stages/a.py", "from pipeline.stages.b import run\n"),
        ("stages/a.py", "from pipeline.stages import b\n"),
        ("stages/a.py", "from pipeline.api import check\n"),
        ("lib.py", "import pipeline.stages.segment\n"),
        ("lib.py", "from pipeline import api\n"),
    ],
)
def test_the_check_sees_a_forbidden_import(tmp_path, module, source):
    pkg = tmp_path / "pipeline"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "stages" / "b.py").write_text("")
    (pkg / module).write_text(source)
    found = violations(pkg)
    assert found and all(v.split(" imports ")[0].endswith(module.removesuffix(".py").replace("/", ".")) for v in found)

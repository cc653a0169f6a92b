"""The import graph keeps its layers (docs/architecture.md): each subpackage imports only from
the layers below it, no stage imports another stage or the API, and no module imports itself
back through others. Imports placed inside functions count; those under `if TYPE_CHECKING:`
do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "pipeline"
# Lowest first. A module may import from its own subpackage and from any lower layer; two
# subpackages on one layer do not import each other.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "core",
        "config",
        "data modeling",
        "demo evaluation engine",
        "neighbours postprocessing",
        "inference submission",
        "training",
        "bundle init",
        "stages",
        "api __main__ explore preflight",  # the entry points: the CLI, the Python API, the notebook helpers
    )
)
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the import nodes under `if TYPE_CHECKING:`."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports(path: Path) -> set[str]:
    """Every name below `pipeline` that `path` imports, anywhere in the file: a module, or a
    name inside one (`from pipeline.x import y` gives pipeline.x and pipeline.x.y)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_only(tree)
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("pipeline.")}


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module of the package that an imported name lives in (itself, or its parent)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """{module: the modules of the package it imports}, modules as dotted names."""
    paths = {_module(p, pkg): p for p in sorted(pkg.rglob("*.py"))}
    out = {}
    for name, path in paths.items():
        found = {_resolve(t, set(paths)) for t in imports(path)}
        out[name] = {t for t in found if t and t != name and t != "pipeline"}
    return out


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def violations(pkg: Path = PKG) -> list[str]:
    """Imports that go up a layer, sideways between rooms of one layer, into an unknown room,
    or from a stage to another stage or the API (the stage table, pipeline.stages itself,
    reaches each stage's module)."""
    bad = []
    for name, targets in sorted(graph(pkg).items()):
        room = _room(name)
        for target in sorted(targets):
            other = _room(target)
            if room not in RANK or other not in RANK:
                bad.append(f"{name} imports {target}: {room if room not in RANK else other} is on no layer (tests/test_layering.py)")
            elif name != "pipeline.stages" and room == "stages" and (target.startswith("pipeline.stages.") or other in LAYERS[-1]):
                bad.append(f"stage {name} imports {target}")
            elif other != room and RANK[other] >= RANK[room] and RANK[room] < len(LAYERS) - 1:  # entry points may share
                bad.append(f"{name} imports {target}: layer {RANK[room]} may not import layer {RANK[other]}")
    return bad


def cycles(pkg: Path = PKG) -> list[list[str]]:
    """The import cycles among modules (strongly connected components of more than one)."""
    edges, index, low, stack, on, out = graph(pkg), {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_import_keeps_the_layers():
    assert violations() == []


def test_no_import_cycle():
    assert cycles() == []


def test_every_room_is_on_a_layer():
    rooms = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    rooms |= {p.stem for p in PKG.glob("*.py") if p.stem != "__init__"}
    assert rooms <= set(RANK)


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pipeline"
    for rel in ["__init__.py", "stages/__init__.py", "stages/b.py", "core/__init__.py", "core/x.py", "training/__init__.py"]:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("")
    for rel, source in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(source)
    return pkg


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("stages/a.py", "from pipeline.stages.b import run\n"),
        ("stages/a.py", "from pipeline.stages import b\n"),
        ("stages/a.py", "from pipeline.api import check\n"),
        ("training/lib.py", "import pipeline.stages.b\n"),
        ("training/lib.py", "from pipeline import api\n"),
        ("core/lib.py", "def f():\n    from pipeline.training import loop  # hidden inside a function\n"),
        ("lib.py", "import pipeline.core.x\n"),  # a room on no layer
    ],
)
def test_the_check_sees_a_forbidden_import(tmp_path, module, source):
    (tmp_path / "pipeline" / "training").mkdir(parents=True)
    (tmp_path / "pipeline" / "training" / "loop.py").write_text("")
    (tmp_path / "pipeline" / "api.py").write_text("")
    pkg = _plant(tmp_path, {module: source})
    found = violations(pkg)
    name = "pipeline." + module.removesuffix(".py").replace("/", ".")
    assert found and all(v.split(" imports ")[0].endswith(name) for v in found), found


def test_a_cycle_hidden_inside_a_function_is_found(tmp_path):
    pkg = _plant(
        tmp_path,
        {
            "core/a.py": "from pipeline.core import b\n",
            "core/b.py": "def late():\n    from pipeline.core.a import thing  # a cycle a plain top-level scan misses\n",
        },
    )
    assert cycles(pkg) == [["pipeline.core.a", "pipeline.core.b"]]
    assert violations(pkg) == []  # one room: only the cycle check sees it


def test_a_type_checking_import_does_not_count(tmp_path):
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pipeline.training import loop\n"
    (tmp_path / "pipeline" / "training").mkdir(parents=True)
    (tmp_path / "pipeline" / "training" / "loop.py").write_text("")
    assert violations(_plant(tmp_path, {"core/lib.py": source})) == []

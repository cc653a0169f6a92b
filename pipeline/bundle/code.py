"""What code a bundle carries: the inference modules `predict.py` needs (the closure of
pipeline/bundle/offline.py's imports, refused when it reaches training code), the pinned
requirements of their third-party imports, and predict.py itself."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import shutil
import sys
from pathlib import Path

from pipeline.core.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/
# What a bundle must never carry: training, the stage cache, the scorer's fitting. Modules are
# named relative to the package (core.errors); a name covers the modules under it.
TRAINING = frozenset(
    "training engine stages demo api explore preflight data.datasets data.loader modeling.losses postprocessing.score_predictor".split()
)
PREDICT_PY = '''"""Write a submission with this bundle: python predict.py --images TEST_DIR --out submission.csv"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bundle's own copy of the inference modules, not a checkout's
sys.dont_write_bytecode = True  # the bundle stays as its manifest lists it (and /kaggle/input is read-only)

from pipeline.bundle.offline import main  # noqa: E402

raise SystemExit(main(bundle=HERE))
'''


def _file(module: str) -> Path:
    return PACKAGE.joinpath(*module.split(".")).with_suffix(".py")


def _own(name: str) -> str | None:
    """A dotted import below `pipeline` as the module or subpackage it names (core.errors,
    stages), or None when it names neither (an attribute of one)."""
    rel = name.split(".")[1:]
    path = PACKAGE.joinpath(*rel) if rel else None
    return ".".join(rel) if path and (path.with_suffix(".py").exists() or path.is_dir()) else None


def _imports(module: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level third-party names) that a module file imports; a
    subpackage imported as such (stages) is listed too, so that the training check sees it."""
    own, other = set(), set()
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            if node.module.startswith("pipeline.") and _file(node.module[len("pipeline.") :]).exists():
                names.append(node.module)  # `from pipeline.x.y import attr`
        for name in names:
            top = name.split(".")[0]
            if top != "pipeline":
                other |= {top} - set(sys.stdlib_module_names)
            elif found := _own(name):
                own.add(found)
    return own, other


def is_training(module: str) -> bool:
    """Whether a module (dotted, below the package) is training code a bundle must not carry."""
    return any(module == t or module.startswith(t + ".") for t in TRAINING)


def closure(entry: str = "bundle.offline") -> tuple[list[str], set[str]]:
    """The modules of this package that `entry` needs, transitively, and their third-party imports."""
    seen, todo, third = set(), [entry], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not _file(name).exists():
            continue  # a subpackage: listed, so that the training check sees it
        own, other = _imports(_file(name))
        todo.extend(own - seen)
        third |= other
    return sorted(seen), third


def requirements(imports: set[str]) -> list[str]:
    """Pinned requirement lines: the distributions providing `imports`, and what they require
    that is installed (timm under smp's encoders, for one), at this environment's versions."""
    providers = md.packages_distributions()
    todo = sorted({d for name in imports for d in providers.get(name, [])})
    pins: dict[str, str] = {}
    while todo:
        dist = todo.pop()
        key = dist.lower().replace("_", "-")
        if key in pins:
            continue
        try:
            meta = md.distribution(dist)
        except md.PackageNotFoundError:
            continue
        pins[key] = meta.version.split("+")[0]  # a local label (torch's +cu130) is not on the index
        for req in meta.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return [f"{k}=={v}" for k, v in sorted(pins.items())]


def write_code(out: Path, export: str | None) -> list[str]:
    """The inference modules, predict.py and the pinned requirements.txt, into `out`."""
    modules, third = closure()
    if export != "onnx":
        third.discard("onnxruntime")  # imported only to run ONNX files
    leaked = [m for m in modules if is_training(m)]
    if leaked:
        raise UserError(f"bundle: the inference modules import training code ({', '.join(sorted(leaked))}); refusing to bundle it")
    for name in modules:
        parts = name.split(".")
        for n in range(len(parts)):  # each package's __init__ on the way down
            init = PACKAGE.joinpath(*parts[:n], "__init__.py")
            (out / "pipeline").joinpath(*parts[:n]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(init, (out / "pipeline").joinpath(*parts[:n], "__init__.py"))
        shutil.copyfile(_file(name), (out / "pipeline").joinpath(*parts).with_suffix(".py"))
    (out / "predict.py").write_text(PREDICT_PY)
    reqs = requirements(third)
    (out / "requirements.txt").write_text("\n".join(reqs) + "\n")
    return modules

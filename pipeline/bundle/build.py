"""The offline bundle for a code competition: a self-contained folder that reproduces the
pipeline's submission without the repository. It holds the ensemble's fold weights (state
dicts, or TorchScript with --export), the frozen post-processing policy (the candidate grid,
the chosen candidate or the LightGBM text model), the resolved config, the inference-only
modules of this package (pipeline/bundle/offline.py and what it imports, no training code), a pinned
requirements.txt, `predict.py`, and a manifest with the SHA-256 of every file."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bundle import offline
from pipeline.bundle.offline import FORMAT, PLAN
from pipeline.config import loader as config_mod
from pipeline.config.schema import Config
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore, store_files
from pipeline.data.classrows import flat, read_rows, truth_planes
from pipeline.data.tables import fold_model_paths
from pipeline.inference.blend import blend, test_weights
from pipeline.inference.contract import FittedModel
from pipeline.inference.ensemble_io import common_ids, read_maps
from pipeline.inference.fold_models import classifier_paths
from pipeline.postprocessing.policy import candidate_grid

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


@dataclass(frozen=True)
class Sources:
    """The finished stage folders a bundle is made from."""

    models: dict[str, FittedModel]  # each model of ensemble.models (pipeline/inference/contract.py)
    classify: Path
    scorer: Path
    ingest: Path
    folds: Path


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


def _blend_weights(cfg: Config, src: Sources) -> list[float]:
    """The test blend's weights, fitted on all OOF maps as the ensemble stage fits them."""
    if len(src.models) == 1 or not cfg.ensemble.fit_weights:
        return [1.0 / len(src.models)] * len(src.models)
    masks = ArrayStore(src.ingest, "masks")
    folders = {name: m.oof for name, m in src.models.items()}
    ids = common_ids(folders, masks.ids)
    oofs = [read_maps(d, "oof", ids) for d in folders.values()]
    k = max(len(cfg.data.classes), 1)
    if k == 1:
        return [float(w) for w in test_weights(oofs, [masks.get(i)[..., 0] for i in ids])]
    # K classes: blended (image, class) row by row, as the ensemble stage blends them
    truths = [t for i in ids for t in truth_planes(masks.get(i), k)]
    return [float(w) for w in test_weights([flat(m) for m in oofs], truths)]


def frozen_policy(cfg: Config, scorer: Path) -> dict:
    """The scorer's policy as data: the candidate grid, and either the candidate every image
    gets (grid, none) or the LightGBM model and its feature columns (global, per_image)."""
    s = cfg.scorer
    cands = candidate_grid(s.thresholds, s.min_areas, s.gates)
    name = fileio.read_json(scorer / "policy.json")["policy"]
    out = {"name": name, "candidates": cands.tolist(), "fixed": None, "lgbm": None, "features": None}
    if name in ("grid", "none"):
        out["fixed"] = _fixed(cfg, scorer, cands)
    elif name == "difficulty":  # its groups' edges and candidates come from the OOF scores, which a bundle does not carry
        raise UserError("bundle: the scorer's policy 'difficulty' is not frozen into bundles yet; use scorer.difficulty: false")
    elif s.edges:  # the bundle carries no mosaic search, nor the train tiles' OOF maps
        raise UserError(f"bundle: the scorer's policy {name!r} reads neighbour-edge features (scorer.edges); use scorer.edges: false")
    elif s.knn:  # the bundle carries no embed encoder, and a test image's neighbours are other test images
        raise UserError(
            f"bundle: the scorer's policy {name!r} reads KNN features (scorer.knn), which a bundle cannot compute; use scorer.knn: 0"
        )
    else:
        out["lgbm"] = "policy/lgbm.txt"
        out["features"] = [c for c in fileio.read_csv(scorer / "oof_features.csv", nrows=0).columns if c != "id"]
    return out


def _safe(name: str) -> str:
    # pseudo:fpn names a folder: no colon in a path that Windows or a Kaggle dataset must hold
    return name.replace(":", "-")


def _fixed(cfg: Config, scorer: Path, cands: np.ndarray) -> int | list[int]:
    """The candidate every test row gets under grid or none: one, or one per class (K classes
    choose per class), found in the grid by its values."""
    params = read_rows(scorer / "test_params.csv")
    groups = [params[params["class"] == c] for c in cfg.data.classes] if cfg.data.classes else [params]
    picks = []
    for rows in groups:
        chosen = rows[["threshold", "min_area", "gate"]].to_numpy(float)
        match = np.flatnonzero(np.isclose(cands, chosen[0]).all(axis=1)) if len(chosen) else []
        if len(match) == 0:
            raise UserError(
                f"bundle: {scorer / 'test_params.csv'} holds no candidate of scorer.thresholds/min_areas/gates; rerun the scorer"
            )
        picks.append(int(match[0]))
    return picks if cfg.data.classes else picks[0]


def _copy_context(src: Sources, out: Path) -> dict | None:
    """With mosaic context, the train tiles a test tile may touch and the search's ratio:
    predict.py searches the train and test tiles together, as the mosaic stage did."""
    ratios = [m.context.ratio for m in src.models.values() if m.context is not None]
    if not ratios:
        return None
    (out / "context").mkdir()
    for part in store_files(src.ingest, "images"):
        shutil.copyfile(part, out / "context" / part.name)
    return {"ratio": ratios[0], "train": "context"}  # one ratio: the config check keeps one search


def _copy_models(src: Sources, cfg: Config, out: Path) -> tuple[dict, list[str]]:
    models = {}
    for name, model in src.models.items():
        models[name] = [f"models/{_safe(name)}/{p.parent.name}.pt" for p in model.folds]
        for p, rel in zip(model.folds, models[name], strict=True):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
    cls = []
    if cfg.classify.enabled and not cfg.classify.seg_head:
        for p in classifier_paths(fold_model_paths(src.classify)):
            rel = f"models/classify/{p.relative_to(src.classify).parts[0]}.pt"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
            cls.append(rel)
    return models, cls


def _write_code(out: Path, export: str | None) -> list[str]:
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


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PACKAGE, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return res.stdout.strip() or None


def write_manifest(out: Path, extra: dict) -> dict:
    """manifest.json: every file of the bundle with its size and SHA-256 (written last)."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json" and "__pycache__" not in p.parts)
    manifest = {**extra, "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": offline.sha256(p)} for p in files}}
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    fileio.write_json(out / "manifest.json", manifest)
    return manifest


def build(cfg: Config, src: Sources, out: Path, export: str | None = None, wheels: bool = False) -> dict:
    """Write the bundle into `out` (a new folder; built beside it and renamed, so a failure
    leaves nothing half-written). Returns its manifest."""
    if out.exists() and any(out.iterdir()):
        raise UserError(f"bundle: {out} exists and is not empty; give a new folder")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        models, cls = _copy_models(src, cfg, tmp)
        weights = _blend_weights(cfg, src)
        policy = frozen_policy(cfg, src.scorer)
        if policy["lgbm"]:
            (tmp / "policy").mkdir()
            shutil.copyfile(src.scorer / "lgbm.txt", tmp / policy["lgbm"])
        (tmp / "config.yaml").write_text("base: null\n" + config_mod.dump(cfg))
        plan = {
            "format": FORMAT,
            "experiment": cfg.experiment.name,
            "config": "config.yaml",
            "channels": json.loads((src.ingest / "stats.json").read_text())["channels"],
            "tta": list(cfg.segment.train.tta),
            "models": {name: src.models[name].to_plan(models[name], w) for name, w in zip(models, weights, strict=True)},
            "classifier": cls,
            "policy": policy,
            "export": None,
        }
        plan["context"] = _copy_context(src, tmp)
        if export:
            from pipeline.bundle.export import export_models

            plan = export_models(cfg, plan, tmp, export, src.ingest)
        fileio.write_json(tmp / PLAN, plan)
        modules = _write_code(tmp, export)
        if wheels:
            download_wheels(tmp)
        extra = {"experiment": cfg.experiment.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "pipeline_commit": _git_commit()}
        manifest = write_manifest(tmp, extra | {"modules": modules, "export": plan["export"]})
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def download_wheels(out: Path) -> None:
    """pip download of requirements.txt into wheels/, for `pip install --no-index --find-links wheels`."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "-r",
        str(out / "requirements.txt"),
        "-d",
        str(out / "wheels"),
        "--only-binary=:all:",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"bundle --wheels: pip download failed: {last}")


def replan(bundle: Path, cfg: Config, measured, pick, info: dict) -> dict:
    """Write the planner's choice (models, fold models, TTA views) into a bundle's plan, with
    blend weights refitted on all OOF maps of the chosen models and views (kept when they are
    the bundle's own), and a new manifest."""
    from pipeline.bundle import planner

    plan = offline.read_plan(bundle)
    chosen, views = pick["models"].split("+"), pick["views"].split("+")
    unknown = [n for n in chosen if n not in plan["models"]]
    if unknown:
        raise UserError(f"plan: the bundle {bundle} holds no model {unknown[0]!r}; build it from this config")
    if chosen == list(plan["models"]) and set(views) == set(plan["tta"]):
        # The configured blend and views: keep the bundle's weights (fitted on the stored OOF maps)
        # and view order, so that the bundle still reproduces the pipeline's submission.
        weights = {n: m["weight"] for n, m in plan["models"].items()}
        views = list(plan["tta"])
    else:
        maps = [blend([measured.oof[n][v] for v in views], np.full(len(views), 1 / len(views))) for n in chosen]
        fitted = test_weights(maps, measured.truths, cfg.ensemble.fit_weights)
        weights = {n: float(w) for n, w in zip(chosen, fitted, strict=True)}
    info = info | {
        "expected_s": round(float(pick["seconds"]), 1),
        "oof_best_of_choices": round(float(pick["oof"]), 4),
        "seconds_per_image": measured.seconds,
    }
    new = planner.apply_to_plan(plan, pick, weights, views, info)
    fileio.write_json(bundle / PLAN, new)
    old = fileio.read_json(bundle / "manifest.json") or {}
    return write_manifest(bundle, {k: v for k, v in old.items() if k not in ("files", "total_bytes")})


verify = offline.verify

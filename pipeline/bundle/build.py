"""The offline bundle for a code competition: a self-contained folder that reproduces the
pipeline's submission without the repository. It holds the ensemble's fold weights (state
dicts, or TorchScript with --export), the frozen post-processing policy (the candidate grid,
the chosen candidate or the LightGBM text model), the resolved config, the inference-only
modules of this package (pipeline/bundle/offline.py and what it imports, no training code), a pinned
requirements.txt, `predict.py`, and a manifest with the SHA-256 of every file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.bundle import offline
from pipeline.bundle.code import write_code
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


@dataclass(frozen=True)
class Sources:
    """The finished stage folders a bundle is made from."""

    models: dict[str, FittedModel]  # each model of ensemble.models (pipeline/inference/contract.py)
    classify: Path
    scorer: Path
    ingest: Path
    folds: Path


def _blend_weights(cfg: Config, src: Sources) -> list[float]:
    """The test blend's weights, fitted on all OOF maps as the ensemble stage fits them."""
    if len(src.models) == 1 or not cfg.ensemble.fit_weights:
        return [1.0 / len(src.models)] * len(src.models)
    masks = ArrayStore(src.ingest, "masks")
    folders = {name: m.oof for name, m in src.models.items()}
    ids = common_ids(folders, masks.ids)
    oofs = [flat(read_maps(d, "oof", ids)) for d in folders.values()]
    # Row by row (an image, or an (image, class) pair for K classes), as the ensemble stage blends
    truths = [t for i in ids for t in truth_planes(masks.get(i), max(len(cfg.data.classes), 1))]
    return [float(w) for w in test_weights(oofs, truths)]


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
    elif s.edges:  # the train tiles' OOF maps, which the edge features read, are not in a bundle
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


def _git_commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
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
        modules = write_code(tmp, export)
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

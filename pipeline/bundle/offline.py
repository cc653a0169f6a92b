"""The offline bundle's runtime: `predict.py --images DIR --out submission.csv` in a bundle
folder (pipeline/bundle/build.py writes it). It ingests the test folder with the pipeline's own
checks, runs the bundle's fold models through the same inference code as the ensemble stage
(pipeline/inference/ensemble.py), applies the frozen post-processing policy and writes a validated
submission. It imports no training code: a bundle carries only the modules this one needs."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.config import loader as config_mod
from pipeline.config.schema import Config
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore, dequantise, quantise
from pipeline.data.classrows import class_of_row, cls_frame, read_rows
from pipeline.data.ingest import ingest
from pipeline.data.multiclass import Classes
from pipeline.data.sources import Sources
from pipeline.inference.contract import FittedModel
from pipeline.inference.ensemble import ensemble_test
from pipeline.neighbours.mosaic_context import NEIGHBOURS_CSV, Mosaic, search
from pipeline.postprocessing.features import feature_table, meta_features
from pipeline.postprocessing.policy import choose, predicted
from pipeline.submission.binary import header_problem, make_submission
from pipeline.submission.long import make_long_submission

logger = logging.getLogger("pipeline.bundle.offline")
PLAN = "bundle.json"
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Request:
    """One prediction run: the bundle, the test folder, where the submission goes, and the
    test side's inputs the pipeline read from its config (metadata, sample submission)."""

    bundle: Path
    images: Path
    out: Path
    metadata: tuple[Path, ...] = ()
    sample_submission: Path | None = None
    device: str | None = None  # cpu / cuda / auto; None keeps the config's


KEYS = ("config", "channels", "tta", "models", "classifier", "policy")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(bundle: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Files of a bundle that are missing or whose size or SHA-256 differs from its manifest
    (those under the folders in `skip` unchecked)."""
    manifest = fileio.read_json(bundle / "manifest.json")
    if manifest is None:
        return [f"{bundle / 'manifest.json'}: missing or unreadable"]
    problems = []
    for rel, info in manifest.get("files", {}).items():
        p = bundle / rel
        if rel.startswith(skip):
            continue
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != info["bytes"] or sha256(p) != info["sha256"]:
            problems.append(f"{p}: differs from the manifest")
    return problems


def read_plan(bundle: Path) -> dict:
    plan = fileio.read_json(bundle / PLAN)
    if plan is None:
        raise UserError(f"{bundle / PLAN}: not found; is {bundle} a bundle folder?")
    if plan.get("format") != FORMAT:
        raise UserError(f"{bundle / PLAN}: format {plan.get('format')!r}, this runtime reads format {FORMAT}")
    missing = [k for k in KEYS if k not in plan]
    if missing:
        raise UserError(f"{bundle / PLAN}: no {missing[0]!r} key")
    return plan


def bundle_config(bundle: Path, plan: dict, device: str | None = None) -> Config:
    """The bundle's resolved config, with the TTA views the bundle's plan chose."""
    cfg = config_mod.load(bundle / plan["config"], [f"experiment.device={device}"] if device else [])
    train = dataclasses.replace(cfg.segment.train, tta=list(plan["tta"]))
    return dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, train=train))


def plan_models(plan: dict, cfg: Config, bundle: Path) -> dict[str, FittedModel]:
    """The plan's models, each built by its own segment section (a zoo member, the student)."""
    return {name: FittedModel.from_plan(name, entry, cfg, bundle) for name, entry in plan["models"].items()}


def _mosaic(bundle: Path, plan: dict, images: ArrayStore, work: Path) -> Mosaic | None:
    """With mosaic context: the neighbours of the test tiles among themselves and the bundle's
    train tiles, searched as the mosaic stage searched them, written and read back as the
    ensemble stage reads them."""
    found = plan.get("context")
    if not found:
        return None
    train = ArrayStore(bundle / found["train"], "images")
    work.mkdir(parents=True)
    fileio.write_csv(work / NEIGHBOURS_CSV, search(train, images, found["ratio"]).sides)
    return Mosaic.open(work, images, train)


def _stored(maps: list[np.ndarray] | None) -> list[np.ndarray] | None:
    # The ensemble stage stores maps as uint8 and the submission reads them back: the same
    # rounding here keeps the bundle's thresholds seeing the values the pipeline's saw.
    return None if maps is None else [dequantise(quantise(m)) for m in maps]


def _ingest(req: Request, cfg: Config, plan: dict, work: Path) -> tuple[ArrayStore, pd.DataFrame]:
    src = Sources(
        train_images=None,
        test_images=req.images,
        sample_submission=req.sample_submission,
        metadata_csv=list(req.metadata),
        channels=plan["channels"],
        max_pixels=cfg.data.max_pixels,
        id_column=cfg.data.id_column,
        classes=tuple(cfg.data.classes),
        exclusive=cfg.data.exclusive,
    )
    ingest(src, work)
    return ArrayStore(work, "test_images"), fileio.read_csv(work / "test.csv")


def _params(bundle: Path, plan: dict, features: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each row's (threshold, min_area, gate) under the bundle's frozen policy: a row is an
    image, or an (image, class) pair for K classes, where grid, none and global choose per class."""
    pol = plan["policy"]
    cands = np.asarray(pol["candidates"], dtype=float)
    row_class = class_of_row(len(features) // k, k) if k > 1 else None
    if pol["fixed"] is not None:
        fixed = pol["fixed"]  # one candidate, or one per class
        pick = np.asarray(fixed)[row_class] if row_class is not None else np.full(len(features), int(fixed))
    else:
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(bundle / pol["lgbm"]))
        missing = [c for c in pol["features"] if c not in features.columns]
        if missing:
            raise UserError(f"the policy reads feature(s) {', '.join(missing)}: pass the metadata CSV that holds them (--metadata)")
        features = features[pol["features"]]
        classes = None if row_class is None else (row_class, np.empty(0, dtype=int))
        pick = choose(pol["name"], len(features), predicted(booster, features, cands), np.empty((0, len(cands))), classes=classes)
    return pd.DataFrame(cands[pick], columns=["threshold", "min_area", "gate"], index=features.index)


def _read_back(folder: Path, ids: list[str], cls: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    # The ensemble stage writes the image probabilities to test_cls.csv (a row per image, or per
    # (image, class)) and the scorer and the submission read them back; the same round trip here
    # gives the same floats to the last bit.
    fileio.write_csv(folder / "test_cls.csv", cls_frame(ids, cls, classes))
    return read_rows(folder / "test_cls.csv")["prob"].to_numpy(dtype=float)


def _check_inputs(req: Request, cfg: Config, plan: dict, table: pd.DataFrame) -> None:
    """What would fail after the whole inference, checked right after ingest instead."""
    # (a long-format sample of K classes is checked by the ingest itself)
    problem = None if cfg.data.classes else header_problem(req.sample_submission, [cfg.data.id_column, cfg.submit.rle_column])
    if problem:
        raise UserError(problem)
    needed = [c for c in plan["policy"]["features"] or [] if c.startswith("meta_")]
    missing = [c for c in needed if c not in meta_features(table).columns]
    if missing:
        raise UserError(f"the policy reads feature(s) {', '.join(missing)}: pass the metadata CSV that holds them (--metadata)")
    if req.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device here")


def run(req: Request) -> pd.DataFrame:
    """Predict the test folder with the bundle and write the submission; returns it."""
    problems = verify(req.bundle, skip=("wheels/",))
    if problems:
        raise UserError(
            f"the bundle is incomplete or altered: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    plan = read_plan(req.bundle)
    cfg = bundle_config(req.bundle, plan, req.device)
    with tempfile.TemporaryDirectory(prefix="bundle-ingest-") as tmp:
        images, table = _ingest(req, cfg, plan, Path(tmp) / "ingest")
        _check_inputs(req, cfg, plan, table)
        models = plan_models(plan, cfg, req.bundle)
        weights = np.array([m["weight"] for m in plan["models"].values()])
        mosaic = _mosaic(req.bundle, plan, images, Path(tmp) / "mosaic")
        test = ensemble_test(cfg, models, weights, [req.bundle / p for p in plan["classifier"]], images, mosaic)
        classes = tuple(cfg.data.classes)
        probs, dists, cls = _stored(test.masks), _stored(test.dists), _read_back(Path(tmp), images.ids, test.cls, classes)
        features = feature_table(images.ids, probs, dists, images, cls, table, classes)
        shapes = {i: images.get(i).shape[:2] for i in images.ids}
    params = _params(req.bundle, plan, features, max(len(classes), 1))
    if classes:
        long = Classes(classes, cfg.data.exclusive)
        sub = make_long_submission(images.ids, probs, cls, params, long, req.sample_submission, shapes)
    else:
        header = [cfg.data.id_column, cfg.submit.rle_column]
        sub = make_submission(images.ids, probs, cls, params, header, req.sample_submission, shapes)
    req.out.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(req.out, sub)
    return sub


def main(argv: list[str] | None = None, bundle: Path | None = None) -> int:
    p = argparse.ArgumentParser(prog="predict.py", description="Write a submission for a folder of test images with this bundle.")
    p.add_argument("--images", required=True, type=Path, help="folder of test images")
    p.add_argument("--out", required=True, type=Path, help="submission CSV to write")
    p.add_argument("--metadata", nargs="*", type=Path, default=[], help="metadata CSVs with the test ids (as data.metadata)")
    p.add_argument("--sample-submission", type=Path, help="fixes the ids' order and checks the header")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bundle", type=Path, default=bundle, help=argparse.SUPPRESS if bundle else "bundle folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    start = time.perf_counter()
    req = Request(args.bundle, args.images, args.out, tuple(args.metadata), args.sample_submission, args.device)
    try:
        sub = run(req)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logger.info(f"predict.py: {len(sub)} rows -> {args.out} in {time.perf_counter() - start:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

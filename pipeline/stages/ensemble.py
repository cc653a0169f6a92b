"""Ensemble stage: test inference for every model listed in config (each model's fold maps
averaged, with TTA), blend weights fitted on OOF under nested CV (pipeline/blend.py), and the
blended OOF and test maps (plus the distance maps and classifier probabilities) that the scorer
and the submission read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import fileio
from pipeline.blend import blend, nested_blend
from pipeline.cache import Context
from pipeline.classifier import load_oof
from pipeline.classifier import predict_test as classifier_test
from pipeline.ensemble_io import read_maps
from pipeline.evaluation import score_probs
from pipeline.predict import save_maps
from pipeline.segmentation import predict_test
from pipeline.store import ArrayStore
from pipeline.trainset import TrainSet

logger = logging.getLogger(__name__)


def model_dirs(ctx: Context) -> dict[str, Path]:
    """Folder holding fold models and an 'oof' store, for each model named in config."""
    out = {}
    for name in ctx.cfg.ensemble.models:
        if name == "segment":
            out[name] = ctx.upstream["segment"]
        else:  # the config check made sure pseudo.rounds >= 1 when pseudo is named
            out[name] = ctx.upstream["pseudo"] / "final"
    return out


def load_maps(folder: Path, name: str, ids: list[str]) -> list[np.ndarray]:
    maps = read_maps(folder, name, ids)
    if maps is None:
        raise FileNotFoundError(f"no '{name}' maps in {folder}")
    return maps


def _common_ids(dirs: dict[str, Path], order: list[str]) -> list[str]:
    sets = [set(ArrayStore(d, "oof").ids) for d in dirs.values()]
    return [i for i in order if all(i in s for s in sets)]


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"])
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    dirs = model_dirs(ctx)
    ids = _common_ids(dirs, data.images.ids)
    truths = [data.masks.get(i)[..., 0] for i in ids]
    oofs = {name: load_maps(d, "oof", ids) for name, d in dirs.items()}
    per_model = {name: round(float(score_probs(truths, m).mean()), 4) for name, m in oofs.items()}
    fold_of = data.fold_of()
    nb = nested_blend(list(oofs.values()), truths, np.array([fold_of[i] for i in ids]), cfg.ensemble.fit_weights)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    save_maps(ctx.dir, "oof", ids, nb.oof)
    seg_dir = ctx.upstream["segment"]
    if (seg_dir / "oof_dist.index.csv").exists():
        save_maps(ctx.dir, "oof_dist", ids, load_maps(seg_dir, "oof_dist", ids))
    tests, test_dist, test_head = [], None, None
    for name, d in dirs.items():
        logger.info(f"ensemble: test inference with {name}")
        maps = predict_test(cfg, d, test_images, cfg.ensemble.adabn)
        tests.append(maps.masks)
        test_dist = maps.dists if test_dist is None else test_dist
        test_head = maps.cls if test_head is None else test_head
    save_maps(ctx.dir, "test", test_images.ids, blend(tests, nb.test_weights))
    if test_dist is not None:
        save_maps(ctx.dir, "test_dist", test_images.ids, test_dist)
    _write_cls(ctx, ids, test_images, test_head)
    return {
        "models": list(dirs),
        "weights": [round(float(w), 3) for w in nb.test_weights],
        "fold_weights": {f"fold{k}": [round(float(x), 3) for x in w] for k, w in nb.fold_weights.items()},
        "oof_tgs_per_model": per_model,
        "oof_tgs": round(float(nb.scores.mean()), 4),
        "n_test": len(test_images),
    }


def _write_cls(ctx: Context, ids: list[str], test_images: ArrayStore, test_head: np.ndarray | None) -> None:
    """Classifier probabilities for the blended OOF ids and the test ids (NaN = no classifier),
    from the classify stage or, with classify.source = seg_head, from the segmentation head."""
    head = ctx.cfg.classify.seg_head
    oof = load_oof(ctx.upstream["segment" if head else "classify"])
    prob = oof.set_index("id")["prob"].reindex(ids).to_numpy() if oof is not None else np.full(len(ids), np.nan)
    fileio.write_csv(ctx.dir / "oof_cls.csv", pd.DataFrame({"id": ids, "prob": prob}))
    if head:
        test_prob = test_head
    else:
        test_prob = classifier_test(ctx.cfg, ctx.upstream["classify"], test_images, ctx.cfg.ensemble.adabn)
    fileio.write_csv(ctx.dir / "test_cls.csv", pd.DataFrame({"id": test_images.ids, "prob": test_prob}))

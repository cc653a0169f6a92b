"""Ensemble stage: test inference for every model listed in config (each model's fold maps
averaged, with TTA), blend weights fitted on OOF, and the blended OOF and test maps (plus
the distance maps and classifier probabilities) that the scorer and the submission read."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache import Context
from pipeline.ensemble_io import read_maps
from pipeline.errors import UserError
from pipeline.evaluation import score_probs
from pipeline.predict import save_maps
from pipeline.stages import classify, segment
from pipeline.store import ArrayStore


def model_dirs(ctx: Context) -> dict[str, Path]:
    """Folder holding fold models and an 'oof' store, for each model named in config."""
    out = {}
    for name in ctx.cfg.ensemble.models:
        if name == "segment":
            out[name] = ctx.upstream["segment"]
        elif name == "pseudo":
            final = ctx.upstream["pseudo"] / "final"
            if final.exists():
                out[name] = final
            else:
                ctx.log("ensemble: pseudo has no retrained models (pseudo.rounds = 0); skipped")
        else:
            raise UserError(f"ensemble.models: unknown model {name!r}; valid: segment, pseudo")
    return out


def load_maps(folder: Path, name: str, ids: list[str]) -> list[np.ndarray]:
    maps = read_maps(folder, name, ids)
    if maps is None:
        raise FileNotFoundError(f"no '{name}' maps in {folder}")
    return maps


def blend(maps: list[list[np.ndarray]], weights: np.ndarray) -> list[np.ndarray]:
    return [sum(w * m[i] for w, m in zip(weights, maps, strict=True)) for i in range(len(maps[0]))]


def fit_weights(oofs: list[list[np.ndarray]], truths: list[np.ndarray], step: float = 0.1) -> tuple[np.ndarray, float]:
    """Blend weights on the simplex (grid of `step`) maximising OOF mAP at 0.5."""
    n = len(oofs)
    best_w, best = np.full(n, 1.0 / n), -1.0
    grid = np.round(np.arange(0, 1 + 1e-9, step), 6)
    combos = [np.array(c) for c in itertools.product(grid, repeat=n) if abs(sum(c) - 1) < 1e-6] if n > 1 else [np.ones(1)]
    for w in combos:
        score = float(score_probs(truths, blend(oofs, w)).mean())
        if score > best + 1e-9:
            best_w, best = w, score
    return best_w, best


def _common_ids(dirs: dict[str, Path], order: list[str]) -> list[str]:
    sets = [set(ArrayStore(d, "oof").ids) for d in dirs.values()]
    return [i for i in order if all(i in s for s in sets)]


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    images, masks, _ = segment.open_train(ctx.upstream["ingest"])
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    dirs = model_dirs(ctx)
    ids = _common_ids(dirs, images.ids)
    truths = [masks.get(i)[..., 0] for i in ids]
    oofs = {name: load_maps(d, "oof", ids) for name, d in dirs.items()}
    per_model = {name: round(float(score_probs(truths, m).mean()), 4) for name, m in oofs.items()}
    if cfg.ensemble.fit_weights:
        weights, blended_score = fit_weights(list(oofs.values()), truths)
    else:
        weights = np.full(len(oofs), 1.0 / len(oofs))
        blended_score = float(score_probs(truths, blend(list(oofs.values()), weights)).mean())
    ctx.dir.mkdir(parents=True, exist_ok=True)
    save_maps(ctx.dir, "oof", ids, blend(list(oofs.values()), weights))
    seg_dir = ctx.upstream["segment"]
    if (seg_dir / "oof_dist.index.csv").exists():
        save_maps(ctx.dir, "oof_dist", ids, load_maps(seg_dir, "oof_dist", ids))
    tests, test_dist, test_head = [], None, None
    for name, d in dirs.items():
        ctx.log(f"ensemble: test inference with {name}")
        maps = segment.predict_test(cfg, d, test_images, cfg.ensemble.adabn)
        tests.append(maps.masks)
        test_dist = maps.dists if test_dist is None else test_dist
        test_head = maps.cls if test_head is None else test_head
    save_maps(ctx.dir, "test", test_images.ids, blend(tests, weights))
    if test_dist is not None:
        save_maps(ctx.dir, "test_dist", test_images.ids, test_dist)
    _write_cls(ctx, ids, test_images, test_head)
    return {
        "models": list(dirs),
        "weights": [round(float(w), 3) for w in weights],
        "oof_tgs_per_model": per_model,
        "oof_tgs": round(blended_score, 4),
        "n_test": len(test_images),
    }


def _write_cls(ctx: Context, ids: list[str], test_images: ArrayStore, test_head: np.ndarray | None) -> None:
    """Classifier probabilities for the blended OOF ids and the test ids (NaN = no classifier),
    from the classify stage or, with classify.source = seg_head, from the segmentation head."""
    head = segment.seg_head(ctx.cfg)
    oof = classify.load_oof(ctx.upstream["segment" if head else "classify"])
    prob = oof.set_index("id")["prob"].reindex(ids).to_numpy() if oof is not None else np.full(len(ids), np.nan)
    pd.DataFrame({"id": ids, "prob": prob}).to_csv(ctx.dir / "oof_cls.csv", index=False)
    if head:
        test_prob = test_head
    else:
        test_prob = classify.predict_test(ctx.cfg, ctx.upstream["classify"], test_images, ctx.cfg.ensemble.adabn)
    pd.DataFrame({"id": test_images.ids, "prob": test_prob}).to_csv(ctx.dir / "test_cls.csv", index=False)

"""Pseudo-labeling stage: select confidently predicted test images, label them (hard or
soft), and fine-tune each fold's segmentation model on its training part plus those images;
with pseudo.mean_teacher, all test images also add a consistency loss against an EMA teacher.
Pseudo images only ever enter training parts, so every OOF score stays honest.

Round r predicts the test set with round r-1's models (round 0 = the segment stage's)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cache import Context
from pipeline.datasets import Geometry, SegDataset, build_augment
from pipeline.mean_teacher import MeanTeacher
from pipeline.predict import quantise
from pipeline.schema import Config, PseudoCfg
from pipeline.stages import classify, segment
from pipeline.stages.folds import load_folds
from pipeline.store import ArrayStore, write_store


def select(cfg: PseudoCfg, probs: list[np.ndarray], cls_probs: np.ndarray) -> np.ndarray:
    """Indices of confident test images, most confident first (capped by max_images)."""
    share = np.array([np.mean((p < cfg.pixel_lo) | (p > cfg.pixel_hi)) for p in probs])
    ok = share >= cfg.min_confident_share
    cls = np.asarray(cls_probs, dtype=float)
    if not np.isnan(cls).all():
        ok &= (cls <= cfg.prob_lo) | (cls >= cfg.prob_hi)
    chosen = np.flatnonzero(ok)
    chosen = chosen[np.argsort(-share[chosen], kind="stable")]
    return chosen[: cfg.max_images] if cfg.max_images else chosen


def write_labels(folder: Path, ids: list[str], probs: list[np.ndarray], soft: bool) -> ArrayStore:
    """Pseudo masks as a store: p x 255 when soft, 0/1 when hard."""
    labels = [quantise(p) if soft else (p > 0.5).astype(np.uint8) for p in probs]
    write_store(folder, "pseudo_masks", zip(ids, labels, strict=True))
    return ArrayStore(folder, "pseudo_masks")


def _round_cfg(cfg: Config) -> Config:
    """Fine-tuning schedule: pseudo.epochs epochs of the segment training recipe."""
    train = cfg.segment.train
    swa = min(train.swa_epochs, max(cfg.pseudo.epochs - 1, 0))
    phases = [dataclasses.replace(train.loss[-1], until_epoch=0)]  # the final loss phase only
    # Fine-tune at the SWA learning rate: the full lr undoes what the last epochs and SWA gained.
    new_train = dataclasses.replace(train, epochs=cfg.pseudo.epochs, swa_epochs=swa, loss=phases, lr=train.swa_lr)
    return dataclasses.replace(cfg, segment=dataclasses.replace(cfg.segment, train=new_train))


def run_round(
    ctx: Context, r: int, prev: Path, images, masks, coverage, folds: pd.DataFrame, test_images: ArrayStore, cls_test: np.ndarray
) -> dict:
    cfg, pcfg = ctx.cfg, ctx.cfg.pseudo
    rdir = ctx.dir / f"round{r}"
    probs = segment.predict_test(cfg, prev, test_images).masks
    chosen = select(pcfg, probs, cls_test)
    ids = [test_images.ids[i] for i in chosen]
    labels = write_labels(rdir, ids, [probs[i] for i in chosen], pcfg.soft)
    pseudo_idx = np.array([test_images.position(i) for i in ids], dtype=int)
    rcfg = _round_cfg(cfg)
    geometry = Geometry.from_cfg(cfg.segment.input)
    pseudo_cov = np.array([float((labels.get(i) > (127 if pcfg.soft else 0)).mean()) for i in ids])
    for k in segment.folds_to_run(cfg.segment.train.folds, folds):
        train_idx, val_idx = segment.fold_indices(images, folds, k, cfg.segment.train.max_images, cfg.experiment.seed)
        seed = cfg.experiment.seed + 1000 * r + k
        extra = SegDataset(
            _Reindexed(test_images, pseudo_idx),
            labels,
            np.arange(len(ids)),
            geometry,
            # Seeded like every other augmentation: an unseeded albumentations pipeline draws from
            # its own entropy, which made the pseudo round differ between runs.
            build_augment(cfg.segment.train.augment, seed),
            cfg.segment.aux.signed,
            seed,
            soft=pcfg.soft,
        )
        fold_dir = rdir / f"fold{k}"
        mt = pcfg.mean_teacher
        teacher = MeanTeacher(test_images, geometry, mt, rcfg.segment.train, seed) if mt.enabled else None
        model = segment.train_fold(
            rcfg,
            fold_dir,
            images,
            masks,
            coverage,
            train_idx,
            val_idx,
            k,
            ctx.log,
            extra=(extra, pseudo_cov),
            init=prev / f"fold{k}" / "model.pt",
            teacher=teacher,
        )
        segment.predict_oof(rcfg, model, images, val_idx, fold_dir)
    fold_dirs = sorted(rdir.glob("fold*"))
    segment.merge_oof(rdir, fold_dirs, ("oof", "oof_dist"), images.ids)
    scores = segment.oof_scores(rdir, masks, folds, cfg.segment.train.eval_threshold)
    return {
        "round": r,
        "selected": len(ids),
        "selected_nonempty": int((pseudo_cov > 0).sum()),
        "mean_teacher": pcfg.mean_teacher.enabled,
        "oof_tgs": round(float(scores["tgs"].mean()), 4),
    }


class _Reindexed:
    """A view of a store restricted to some positions, so pseudo labels index 0..n-1."""

    def __init__(self, store: ArrayStore, positions: np.ndarray) -> None:
        self.store, self.positions = store, positions

    def __getitem__(self, i: int) -> np.ndarray:
        return self.store[int(self.positions[i])]

    def __len__(self) -> int:
        return len(self.positions)


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ctx.dir.mkdir(parents=True, exist_ok=True)
    if cfg.pseudo.rounds <= 0:
        return {"rounds": 0}
    images, masks, table = segment.open_train(ctx.upstream["ingest"])
    folds = load_folds(ctx.upstream["folds"])
    coverage = table.set_index("id").loc[images.ids, "coverage"].to_numpy()
    test_images = ArrayStore(ctx.upstream["ingest_test"], "test_images")
    cls_test = classify.predict_test(cfg, ctx.upstream["classify"], test_images)
    base = segment.oof_scores(ctx.upstream["segment"], masks, folds, cfg.segment.train.eval_threshold)
    history = [{"round": 0, "selected": 0, "oof_tgs": round(float(base["tgs"].mean()), 4)}]
    prev = ctx.upstream["segment"]
    for r in range(1, cfg.pseudo.rounds + 1):
        history.append(run_round(ctx, r, prev, images, masks, coverage, folds, test_images, cls_test))
        ctx.log(f"pseudo round {r}: {history[-1]}")
        prev = ctx.dir / f"round{r}"
    (ctx.dir / "rounds.json").write_text(json.dumps(history, indent=2))
    final = ctx.dir / "final"
    if final.is_symlink() or final.exists():
        final.unlink()
    final.symlink_to(prev.name)
    return {"rounds": cfg.pseudo.rounds, "history": history, "oof_tgs": history[-1]["oof_tgs"]}

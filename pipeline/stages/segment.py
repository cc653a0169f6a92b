"""Segmentation stage: per fold, an smp model with an optional distance-map head (see
pipeline/training/segmentation.py), out-of-fold probability and distance maps for every train image."""

from __future__ import annotations

import logging

from pipeline.core import fileio
from pipeline.core.locks import fold_lock
from pipeline.data.classrows import per_class
from pipeline.engine.cache import Context
from pipeline.training import reuse
from pipeline.training.segmentation import merge_cls, merge_oof, oof_scores, predict_oof, train_fold
from pipeline.training.trainset import TrainSet

logger = logging.getLogger(__name__)


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"], ctx.upstream.get("embed"), ctx.upstream.get("mosaic"))
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fold_dirs, reused = [], {}
    for k in ctx.folds_to_run(data.fold_ids(cfg.segment.train.folds)):
        folder = ctx.dir / f"fold{k}"
        with fold_lock(folder):  # fold-parallel runs of this stage never train one fold twice
            train_key = reuse.fold_train_key(ctx.material, "segment", k)
            source = reuse.reuse_fold(ctx, folder, train_key)
            if source is not None:
                reused[folder.name] = source.parent.name
                logger.info(f"fold{k}: model reused from {source.parent.name} (same training, other prediction settings)")
            model = train_fold(cfg, folder, data, k)
            reuse.mark_trained(folder, train_key)
            predict_oof(cfg, model, data, k, folder)
        fold_dirs.append(folder)
    if ctx.stops_before_merge:  # a fold-parallel run, or not rank 0: a run of all folds merges and scores
        return {"folds": [d.name for d in fold_dirs]}
    merge_oof(ctx.dir, fold_dirs, ("oof", "oof_dist"), data.images.ids)
    scores = oof_scores(ctx.dir, data, cfg.segment.train.eval_threshold)
    fileio.write_csv(ctx.dir / "oof_scores.csv", scores)
    fits = {d.name: fileio.read_json(d / "fit.json") for d in fold_dirs}
    head = merge_cls(ctx.dir, fold_dirs, data) if cfg.classify.seg_head else {}
    return (
        head
        | {
            "oof_tgs": round(float(scores["tgs"].mean()), 4),
            "oof_dice": round(float(scores["dice"].mean()), 4),
            "fold_tgs": {f"fold{k}": round(float(v), 4) for k, v in scores.groupby("fold")["tgs"].mean().items()},
            "fits": fits,
            "n_oof": len(scores),
        }
        | per_class(scores)
        | ({"reused_folds": reused} if reused else {})
    )

"""Classifier gating stage: per fold, the empty-mask classifier (pipeline/training/classifier.py);
OOF probabilities, ROC and AUC. With classify.source = seg_head the classifier is a head of
the segmentation model instead, trained by the segment stage."""

from __future__ import annotations

import pandas as pd

from pipeline.core import fileio
from pipeline.core.locks import fold_lock
from pipeline.engine.cache import Context
from pipeline.evaluation.roc import roc_outputs
from pipeline.training.classifier import train_fold
from pipeline.training.trainset import TrainSet


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ctx.dir.mkdir(parents=True, exist_ok=True)
    if not cfg.classify.enabled:
        return {"enabled": False}
    if cfg.classify.seg_head:
        return {"enabled": True, "source": "seg_head (trained with the segment stage)"}
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"])
    folds, parts = ctx.folds_to_run(data.fold_ids(cfg.classify.train.folds)), []
    for k in folds:
        with fold_lock(ctx.dir / f"fold{k}"):  # fold-parallel runs of this stage never train one fold twice
            parts.append(train_fold(cfg, ctx.dir / f"fold{k}", data, k))
    if ctx.stops_before_merge:  # a run of all folds (rank 0 under torchrun) predicts their OOF again
        return {"folds": [f"fold{k}" for k in folds]}
    oof = pd.concat(parts).set_index("id")
    oof = oof.loc[[i for i in data.images.ids if i in oof.index]].reset_index()
    fileio.write_csv(ctx.dir / "oof_cls.csv", oof)
    return {"enabled": True, **roc_outputs(ctx.dir, oof)}

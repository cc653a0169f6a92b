"""Classifier gating stage: per fold, the empty-mask classifier (pipeline/classifier.py);
OOF probabilities, ROC and AUC. With classify.source = seg_head the classifier is a head of
the segmentation model instead, trained by the segment stage."""

from __future__ import annotations

import pandas as pd

from pipeline import distributed, fileio
from pipeline.cache import Context
from pipeline.classifier import train_fold
from pipeline.roc import roc_outputs
from pipeline.trainset import TrainSet


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ctx.dir.mkdir(parents=True, exist_ok=True)
    if not cfg.classify.enabled:
        return {"enabled": False}
    if cfg.classify.seg_head:
        return {"enabled": True, "source": "seg_head (trained with the segment stage)"}
    data = TrainSet.open(ctx.upstream["ingest"], ctx.upstream["folds"])
    parts = [train_fold(cfg, ctx.dir / f"fold{k}", data, k) for k in data.fold_ids(cfg.classify.train.folds)]
    if not distributed.is_main():  # under torchrun rank 0 alone writes
        return {}
    oof = pd.concat(parts).set_index("id")
    oof = oof.loc[[i for i in data.images.ids if i in oof.index]].reset_index()
    fileio.write_csv(ctx.dir / "oof_cls.csv", oof)
    return {"enabled": True, **roc_outputs(ctx.dir, oof)}

"""Mosaic stage: touching pairs among the train and test tiles together (pipeline/neighbours/mosaic.py's
edge costs and ratio test) and each tile's neighbour per side (pipeline/neighbours/mosaic_context.py), for
segment.context. Only images are read, never masks: a test tile's neighbours are as fair to
use as its own pixels."""

from __future__ import annotations

import numpy as np

from pipeline.config import zoo
from pipeline.core import fileio
from pipeline.core.store import ArrayStore, write_store
from pipeline.engine.cache import Context
from pipeline.neighbours import mosaic_context as context


def run(ctx: Context) -> dict:
    if not zoo.mosaic_used(ctx.cfg):  # `all` walks every stage: a config without context searches nothing
        ctx.dir.mkdir(parents=True, exist_ok=True)
        return {"enabled": False}
    train, test = ArrayStore(ctx.upstream["ingest"], "images"), ArrayStore(ctx.upstream["ingest_test"], "test_images")
    found = context.search(train, test, ctx.cfg.segment.context.ratio)
    ids, split, named, sides = found.ids, found.split, found.pairs, found.sides
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(ctx.dir / "pairs.csv", named)
    fileio.write_csv(ctx.dir / context.NEIGHBOURS_CSV, sides)
    # The segment stage reads no test folder: the test tiles its train tiles touch travel here.
    table = context.sides_of(sides)
    border = sorted({n for i in train.ids for n in context.around(table, i, None).values()} & set(test.ids))
    write_store(ctx.dir, context.BORDER, ((i, np.asarray(test.get(i))) for i in border))
    with_any = set(sides["id"])
    share = {
        s: round(float(np.mean([i in with_any for i, k in zip(ids, split, strict=True) if k == s] or [0.0])), 4) for s in ("train", "test")
    }
    counts = {f"pairs_{k.replace('-', '_')}": int(n) for k, n in zip(*np.unique(named["kind"], return_counts=True), strict=True)}
    return {
        "pairs": len(named),
        "border_test_tiles": len(border),
        **counts,
        "train_with_neighbour": share["train"],
        "test_with_neighbour": share["test"],
    }

"""Ingest stages: validate every input file, then cache decoded arrays.

Train and test are separate stages so that pointing `data.test_images` at another folder
(a private held-out set, say) re-ingests only the test images and reruns only inference,
not the fold models."""

from __future__ import annotations

import json

from pipeline.config.schema import DataCfg
from pipeline.core import paths
from pipeline.core.errors import UserError
from pipeline.data.ingest import ingest
from pipeline.data.sources import Sources
from pipeline.engine.cache import Context
from pipeline.submission.binary import header_problem


def _required(value: str | None, key: str):
    path = paths.resolve(value)
    if path is None:
        raise UserError(f"data.{key} is not set")
    return path


def train_sources(d: DataCfg) -> Sources:
    masks = {k: paths.resolve(v) for k, v in d.train_masks.items()} if isinstance(d.train_masks, dict) else paths.resolve(d.train_masks)
    return Sources(
        train_images=_required(d.train_images, "train_images"),
        train_masks=masks,
        train_rle_csv=paths.resolve(d.train_rle_csv),
        metadata_csv=[paths.resolve(m) for m in d.metadata],
        mask_threshold=d.mask_threshold,
        mask_invert=d.mask_invert,
        channels=d.channels,
        max_pixels=d.max_pixels,
        id_column=d.id_column,
        rle_column=d.rle_column,
        classes=tuple(d.classes),
        exclusive=d.exclusive,
    )


def run_train(ctx: Context) -> dict:
    stats = ingest(train_sources(ctx.cfg.data), ctx.dir)
    return {k: stats["train"][k] for k in ("count", "empty", "empty_share", "mean_coverage_nonempty")} | {"channels": stats["channels"]}


def run_test(ctx: Context) -> dict:
    d = ctx.cfg.data
    channels = json.loads((ctx.upstream["ingest"] / "stats.json").read_text())["channels"]
    src = Sources(
        train_images=None,
        test_images=_required(d.test_images, "test_images"),
        sample_submission=paths.resolve(d.sample_submission),
        metadata_csv=[paths.resolve(m) for m in d.metadata],
        channels=channels,
        max_pixels=d.max_pixels,
        id_column=d.id_column,
        classes=tuple(d.classes),
        exclusive=d.exclusive,
    )
    # Checked here as well as by the submit stage: a header that cannot match should fail
    # before any model trains, not at the end of the run.
    # (A long-format sample of K classes is checked by the ingest itself.)
    problem = None if d.classes else header_problem(src.sample_submission, [d.id_column, ctx.cfg.submit.rle_column])
    if problem:
        raise UserError(problem)
    stats = ingest(src, ctx.dir)
    return {"count": stats["test"]["count"], "channels": channels}

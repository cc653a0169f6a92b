"""Submission: gate and post-process the blended test maps with the scorer's chosen
parameters, RLE-encode, validate (ids and order, RLE, duplicates) before writing, then
write submissions/<experiment>-cv<score>.csv atomically."""

from __future__ import annotations

import os

from pipeline import fileio, paths
from pipeline.cache import Context
from pipeline.ensemble_io import EnsembleOutputs
from pipeline.submission import make_submission, score_submission


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ens = EnsembleOutputs(ctx.upstream["ensemble"], ctx.upstream["ingest"], ctx.upstream["ingest_test"])
    params = fileio.read_csv(ctx.upstream["scorer"] / "test_params.csv").set_index("id")
    policy = fileio.read_json(ctx.upstream["scorer"] / "policy.json")
    cv = policy["cv"]
    header = [cfg.data.id_column, cfg.submit.rle_column]
    shapes = {i: ens.test_images.get(i).shape[:2] for i in ens.test_ids}
    sub = make_submission(ens.test_ids, ens.test_probs(), ens.test_cls, params, header, paths.resolve(cfg.data.sample_submission), shapes)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    fileio.write_csv(ctx.dir / "submission.csv", sub)
    paths.SUBMISSIONS_DIR.mkdir(exist_ok=True)
    target = paths.SUBMISSIONS_DIR / f"{cfg.experiment.name}-cv{cv:.4f}.csv"
    fileio.write_csv(target, sub)
    metrics = {
        "file": os.path.relpath(target, paths.REPO_ROOT),
        "cv": cv,
        "policy": policy["policy"],
        "rows": len(sub),
        "empty_share": round(float((sub[cfg.submit.rle_column] == "").mean()), 4),
    }
    solution = paths.resolve(cfg.data.solution_masks)
    if solution is not None and solution.is_dir():
        metrics["hidden_score"], _ = score_submission(target, solution, cfg.submit.metric)
        metrics["hidden_score"] = round(metrics["hidden_score"], 4)
    return metrics

"""Submission: gate and post-process the blended test maps with the scorer's chosen
parameters, RLE-encode, validate (ids and order, RLE, duplicates) before writing, then
write submissions/<experiment>-cv<score>.csv atomically."""

from __future__ import annotations

import os

import pandas as pd

from pipeline import fileio, paths
from pipeline.cache import Context
from pipeline.ensemble_io import EnsembleOutputs
from pipeline.errors import UserError
from pipeline.ingest import format_problems
from pipeline.postprocess import apply
from pipeline.rle import rle_encode
from pipeline.submission import check_submission, header_problem, score_submission


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ens = EnsembleOutputs(ctx.upstream["ensemble"], ctx.upstream["ingest"], ctx.upstream["ingest_test"])
    params = fileio.read_csv(ctx.upstream["scorer"] / "test_params.csv").set_index("id")
    policy = fileio.read_json(ctx.upstream["scorer"] / "policy.json")
    cv = policy["cv"]
    rows = []
    for i, prob, cls in zip(ens.test_ids, ens.test_probs(), ens.test_cls, strict=True):
        p = params.loc[i]
        rows.append((i, rle_encode(apply(prob, cls, p["threshold"], int(p["min_area"]), p["gate"]))))
    header = [cfg.data.id_column, cfg.submit.rle_column]
    problem = header_problem(paths.resolve(cfg.data.sample_submission), header)
    if problem:
        raise UserError(problem)
    sub = pd.DataFrame(rows, columns=header)
    shapes = {i: ens.test_images.get(i).shape[:2] for i in ens.test_ids}
    problems = check_submission(sub.set_axis(["id", "rle"], axis=1), ens.test_ids, shapes, "submission")
    if problems:
        raise UserError(format_problems(problems))
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

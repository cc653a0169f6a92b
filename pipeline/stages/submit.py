"""Submission: gate and post-process the blended test maps with the scorer's chosen
parameters, RLE-encode, validate (ids and order, RLE, duplicates) before writing, then
write submissions/<experiment>-cv<score>.csv atomically."""

from __future__ import annotations

import os

from pipeline.core import fileio, paths
from pipeline.core.errors import UserError
from pipeline.data.classrows import read_rows
from pipeline.data.multiclass import Classes
from pipeline.engine.cache import Context
from pipeline.evaluation.long_score import score_long
from pipeline.inference.ensemble_io import EnsembleOutputs
from pipeline.submission.binary import make_submission, score_submission
from pipeline.submission.long import make_long_submission


def run(ctx: Context) -> dict:
    cfg = ctx.cfg
    ens = EnsembleOutputs(ctx.upstream["ensemble"], ctx.upstream["ingest"], ctx.upstream["ingest_test"])
    params = read_rows(ctx.upstream["scorer"] / "test_params.csv").set_index("id")
    policy = fileio.read_json(ctx.upstream["scorer"] / "policy.json")
    cv = policy["cv"]
    shapes = {i: ens.test_images.get(i).shape[:2] for i in ens.test_ids}
    sample = paths.resolve(cfg.data.sample_submission)
    if ens.k > 1:
        classes = Classes(ens.classes, cfg.data.exclusive)
        sub = make_long_submission(ens.test_ids, ens.test_probs(), ens.test_cls, params.reset_index(), classes, sample, shapes)
    else:
        header = [cfg.data.id_column, cfg.submit.rle_column]
        sub = make_submission(ens.test_ids, ens.test_probs(), ens.test_cls, params, header, sample, shapes)
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
        "empty_share": round(float((sub.iloc[:, -1] == "").mean()), 4),
    }
    solution = paths.resolve(cfg.data.solution_masks)
    if solution is not None and solution.is_dir() and ens.k == 1:
        metrics["hidden_score"], _ = score_submission(target, solution, cfg.submit.metric, cfg.data.mask_invert)
        metrics["hidden_score"] = round(metrics["hidden_score"], 4)
    elif solution is not None and ens.k > 1:  # a long-format hidden solution
        if not solution.is_file():
            raise UserError(f"data.solution_masks: {solution}: K classes are scored against a long-format solution CSV")
        scored = score_long(target, solution, paths.resolve(cfg.data.test_images), classes, cfg.submit.metric)
        metrics["hidden_score"] = round(scored.mean, 4)
        metrics["hidden_per_class"] = {c: round(v, 4) for c, v in scored.per_class.items()}
    return metrics

"""Scorer stage: the LightGBM "LB-score predictor" (pipeline/scoring.py) fitted on the
ensemble's OOF maps; every policy scored under nested CV, `auto` choosing its policy inside
the nesting; the chosen policy refitted on all OOF for the test set."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import fileio
from pipeline.cache import Context
from pipeline.ensemble_io import EnsembleOutputs
from pipeline.errors import UserError
from pipeline.features import feature_table
from pipeline.postprocess import candidate_scores
from pipeline.scoring import Problem, best_policy, choose, fit_model, nested_cv, predicted
from pipeline.trainset import load_folds


def _scatter(path, pred: np.ndarray, true: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    idx = rng.choice(pred.size, size=min(pred.size, 5000), replace=False)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(pred.reshape(-1)[idx], true.reshape(-1)[idx] + rng.normal(0, 0.01, len(idx)), s=3, alpha=0.3)
    ax.plot([0, 1], [0, 1], ls="--", color="grey")
    ax.set_xlabel("predicted per-image metric (nested CV)")
    ax.set_ylabel("true per-image metric")
    fig.tight_layout()
    fileio.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"), fsync=False)
    plt.close(fig)


def _problem(ctx: Context, ens: EnsembleOutputs) -> tuple[Problem, pd.DataFrame]:
    cfg, scfg = ctx.cfg, ctx.cfg.scorer
    table = load_folds(ctx.upstream["folds"]).set_index("id").loc[ens.oof_ids]
    folds = table["fold"].to_numpy()
    groups = table["group"].astype(str).to_numpy() if "group" in table.columns else None
    feats = feature_table(ens.oof_ids, ens.oof_probs(), ens.oof_dists(), ens.images, ens.oof_cls, ens.train_meta)
    cands, scores = candidate_scores(
        ens.truths(), ens.oof_probs(), ens.oof_cls, scfg.thresholds, scfg.min_areas, scfg.gates, cfg.submit.metric
    )
    return Problem(feats, cands, scores, folds, scfg.lgbm, cfg.experiment.seed, groups), feats


def run(ctx: Context) -> dict:
    scfg = ctx.cfg.scorer  # its values were checked when the config loaded
    ens = EnsembleOutputs(ctx.upstream["ensemble"], ctx.upstream["ingest"], ctx.upstream["ingest_test"])
    p, feats = _problem(ctx, ens)
    if len(np.unique(p.fold)) < 2:  # the CLI's preflight says so before training; the API may not
        raise UserError("scorer: the OOF maps hold one fold; nested CV needs two at least (segment.train.folds)")
    nested, pred_all = nested_cv(p, with_auto=scfg.policy == "auto")
    # For the test set `auto` takes the policy that scored best over all folds; the CV it
    # reports is the nested `auto` score, where that choice was made without the scored fold.
    policy = best_policy(nested, p) if scfg.policy == "auto" else scfg.policy
    model = fit_model(feats, p.cands, p.scores, scfg.lgbm, p.seed)
    ctx.dir.mkdir(parents=True, exist_ok=True)
    model.booster_.save_model(str(ctx.dir / "lgbm.txt"))
    imp = pd.DataFrame({"feature": model.booster_.feature_name(), "gain": model.booster_.feature_importance("gain")})
    fileio.write_csv(ctx.dir / "feature_importance.csv", imp.sort_values("gain", ascending=False))
    _scatter(ctx.dir / "pred_vs_true.png", pred_all, p.scores)
    fileio.write_csv(ctx.dir / "oof_features.csv", feats, index=True)
    test_feats = feature_table(ens.test_ids, ens.test_probs(), ens.test_dists(), ens.test_images, ens.test_cls, ens.test_meta)
    test_pred = predicted(model, test_feats, p.cands) if policy in ("global", "per_image") else None
    pick = choose(policy, len(ens.test_ids), test_pred, p.scores, p.raw)
    params = pd.DataFrame(p.cands[pick], columns=["threshold", "min_area", "gate"])
    params.insert(0, "id", ens.test_ids)
    fileio.write_csv(ctx.dir / "test_params.csv", params)
    mean_scores = p.scores.mean(axis=0)
    summary = {
        "policy": policy,
        "cv": nested["auto" if scfg.policy == "auto" else policy],
        "nested_cv": nested,
        "grid_best_all_oof": p.cands[int(np.argmax(mean_scores))].tolist(),
        # chosen and scored on the same OOF: optimistic, but how a one-split script reports
        "grid_best_all_oof_score": round(float(mean_scores.max()), 4),
        "n_candidates": len(p.cands),
    }
    fileio.write_json(ctx.dir / "policy.json", summary)
    return summary

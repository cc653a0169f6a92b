"""Scorer stage: the LightGBM "LB-score predictor" (pipeline/postprocessing/score_predictor.py) fitted on the
ensemble's OOF maps; every policy scored under nested CV, `auto` choosing its policy inside
the nesting; the chosen policy refitted on all OOF for the test set."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.data.classrows import class_of_row, flat, repeat
from pipeline.data.tables import class_presence, load_folds
from pipeline.engine.cache import Context
from pipeline.evaluation.class_rows import all_empty, class_rows
from pipeline.inference.ensemble_io import EnsembleOutputs
from pipeline.neighbours import edges, knn
from pipeline.neighbours import mosaic_context as context
from pipeline.postprocessing.features import feature_table
from pipeline.postprocessing.masks import candidate_scores
from pipeline.postprocessing.score_predictor import Problem, best_policy, choose, fit_model, means, nested_rows, predicted


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


def _with_knn(ctx: Context, feats: pd.DataFrame, pools: pd.Series, k: int, split: str) -> pd.DataFrame:
    """The feature table with scorer.knn neighbours' features (pipeline/neighbours/knn.py) when on: an
    OOF image's neighbours from its own fold, a test image's from its test pool (`pools`)."""
    if not ctx.cfg.scorer.knn:
        return feats
    neighbours = knn.pool_neighbours(knn.read_embeddings(ctx.upstream["embed"], split), pools, ctx.cfg.scorer.knn)
    return feats.join(knn.knn_features(feats, neighbours, pools.index.tolist(), k))


def _with_edges(ctx: Context, feats: pd.DataFrame, ids: list[str], maps: list[np.ndarray], lookup) -> pd.DataFrame:
    """The feature table with neighbour-edge features (pipeline/neighbours/edges.py) when scorer.edges is on."""
    if not ctx.cfg.scorer.edges:
        return feats
    return feats.join(edges.edge_features(ids, maps, context.read_sides(ctx.upstream["mosaic"]), lookup))


def _problem(ctx: Context, ens: EnsembleOutputs) -> tuple[Problem, pd.DataFrame]:
    cfg, scfg = ctx.cfg, ctx.cfg.scorer
    table = load_folds(ctx.upstream["folds"]).set_index("id").loc[ens.oof_ids]
    k = ens.k  # rows: images, or (image, class) pairs for K classes
    folds = repeat(table["fold"].to_numpy(), k)
    groups = table["group"].astype(str).to_numpy() if "group" in table.columns else None
    if k > 1 and groups is None:  # an image's class rows stay on one side of auto's inner split
        groups = np.asarray(ens.oof_ids)
    groups = None if groups is None else repeat(groups, k)
    probs = ens.oof_probs()  # read once, freed on return (the test part comes next)
    feats = feature_table(ens.oof_ids, probs, ens.oof_dists(), ens.images, ens.oof_cls, ens.train_meta, ens.classes)
    feats = _with_knn(ctx, feats, pd.Series(table["fold"].to_numpy(), index=ens.oof_ids), k, "train")
    feats = _with_edges(ctx, feats, ens.oof_ids, probs, edges.oof_lookup(ens.oof_ids, probs, table["fold"].to_dict()))
    cls = ens.oof_cls  # per row
    cands, scores = candidate_scores(ens.truths(), flat(probs), cls, scfg.thresholds, scfg.min_areas, scfg.gates, cfg.submit.metric)
    row_class = class_of_row(len(ens.oof_ids), k) if k > 1 else None
    return Problem(feats, cands, scores, folds, scfg.lgbm, cfg.experiment.seed, groups, row_class, scfg.difficulty), feats


def _per_class(p: Problem, held: dict[str, np.ndarray], policy: str, names: tuple[str, ...], present: np.ndarray) -> dict:
    """K classes: each class's nested CV score under the reported policy and with no
    post-processing, its rows split by whether the image holds the class
    (pipeline/evaluation/class_rows.py), and the all-empty submission's score ({} for one
    binary class)."""
    if p.row_class is None:
        return {}
    rows = class_rows(held[policy], present, p.row_class, names)
    out = {}
    for c, name in enumerate(names):
        at = p.row_class == c
        out[name] = {"cv": round(float(held[policy][at].mean()), 4)}
        if "none" in held:
            out[name]["none"] = round(float(held["none"][at].mean()), 4)
        out[name] |= {k: rows[name][k] for k in ("images", "present", "absent_fp", "all_empty")}
    return {"per_class_cv": out, "all_empty_cv": all_empty(present)}


def _presence(ens: EnsembleOutputs) -> np.ndarray:
    """Per (image, class) row, whether the image holds the class, from the ingest table's
    per-class coverage (no masks decoded again: the candidate scores already did)."""
    table = ens.train_meta.set_index("id").loc[ens.oof_ids]
    return class_presence(table, ens.classes).reshape(-1) if ens.classes else table["coverage"].to_numpy() > 0


def run(ctx: Context) -> dict:
    scfg = ctx.cfg.scorer  # its values were checked when the config loaded
    ens = EnsembleOutputs(ctx.upstream["ensemble"], ctx.upstream["ingest"], ctx.upstream["ingest_test"])
    p, feats = _problem(ctx, ens)
    if len(np.unique(p.fold)) < 2:  # the CLI's preflight says so before training; the API may not
        raise UserError("scorer: the OOF maps hold one fold; nested CV needs two at least (segment.train.folds)")
    held, pred_all = nested_rows(p, with_auto=scfg.policy == "auto")
    nested = means(held)
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
    # Each row's held-out score under every policy: two scorers compared paired (bench/paired_oof.py).
    fileio.write_csv(ctx.dir / "nested_scores.csv", pd.DataFrame({"id": feats.index, "fold": p.fold} | held).round(6))
    test_probs = ens.test_probs()
    test_feats = feature_table(ens.test_ids, test_probs, ens.test_dists(), ens.test_images, ens.test_cls, ens.test_meta, ens.classes)
    fold_size = len(ens.oof_ids) / max(len(np.unique(p.fold)), 1)
    test_feats = _with_knn(ctx, test_feats, knn.test_pools(ens.test_ids, fold_size, ctx.cfg.experiment.seed), ens.k, "test")
    if scfg.edges:
        oof = dict(zip(ens.oof_ids, ens.oof_probs(), strict=True))
        lookup = edges.test_lookup(oof, dict(zip(ens.test_ids, test_probs, strict=True)))
        test_feats = _with_edges(ctx, test_feats, ens.test_ids, test_probs, lookup)
    test_pred = predicted(model, test_feats, p.cands) if policy in ("global", "per_image", "difficulty") else None
    test_class = class_of_row(len(ens.test_ids), ens.k)
    classes = None if p.row_class is None else (test_class, p.row_class)
    pick = choose(policy, len(test_feats), test_pred, p.scores, p.raw, classes)
    params = pd.DataFrame(p.cands[pick], columns=["threshold", "min_area", "gate"])
    params.insert(0, "id", repeat(ens.test_ids, ens.k))
    if ens.k > 1:
        params.insert(1, "class", np.asarray(ens.classes)[test_class])
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
    } | _per_class(p, held, "auto" if scfg.policy == "auto" else policy, ens.classes, _presence(ens))
    fileio.write_json(ctx.dir / "policy.json", summary)
    return summary

"""scorer.knn: the LB-score predictor's features from the neighbours' predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_balance import BALANCE_EMBED
from test_embed import EMBED

from pipeline.core import fileio
from pipeline.core.errors import ConfigError, UserError
from pipeline.engine import cache
from pipeline.neighbours import knn
from pipeline.stages import GRAPH


def _table(ids: list[str], k: int = 1) -> pd.DataFrame:
    n = len(ids) * k
    values = {c: np.arange(n, dtype=float) + 10 * j for j, c in enumerate(knn.COLUMNS)}
    return pd.DataFrame(values, index=[f"r{r}" for r in range(n)])


def _neighbours(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame([(a, b, r, s) for r, (a, b, s) in enumerate(rows)], columns=["id", "neighbour_id", "rank", "similarity"])


def test_features_are_the_similarity_weighted_mean_of_the_neighbours():
    ids = ["a", "b", "c"]
    nb = _neighbours([("a", "b", 0.75), ("a", "c", 0.25), ("b", "a", 1.0)])
    out = knn.knn_features(_table(ids), nb, ids)
    assert out.loc["r0", "nn_p_mean"] == pytest.approx(0.75 * 1 + 0.25 * 2)
    assert out.loc["r0", "nn_cls_prob"] == pytest.approx(30 + 1.25)
    assert out.loc["r0", "nn_sim_max"] == 0.75 and out.loc["r0", "nn_sim_mean"] == 0.5
    assert out.loc["r1", "nn_p_mean"] == 0.0
    assert out.loc["r2"].isna().all()  # no neighbours: missing, which LightGBM handles


def test_class_rows_read_the_neighbours_rows_of_their_own_class():
    ids = ["a", "b"]
    out = knn.knn_features(_table(ids, k=2), _neighbours([("a", "b", 0.5)]), ids, k=2)
    assert out["nn_p_mean"].tolist()[:2] == [2.0, 3.0]  # rows of b: class 0 at 2, class 1 at 3


def test_neighbours_stay_within_their_pool():
    rng = np.random.default_rng(0)
    emb = {f"i{j}": v / np.linalg.norm(v) for j, v in enumerate(rng.normal(size=(12, 4)))}
    pools = pd.Series([0] * 4 + [1] * 4 + ["test"] * 4, index=list(emb))
    nb = knn.pool_neighbours(emb, pools, 2)
    assert len(nb) == 24 and (pools.loc[nb["id"]].to_numpy() == pools.loc[nb["neighbour_id"]].to_numpy()).all()
    with pytest.raises(UserError, match="no embedding for image 'x'"):
        knn.pool_neighbours(emb, pd.Series([0], index=["x"]), 2)


def test_knn_needs_a_label_free_embed_stage(smoke_cfg):
    with pytest.raises(ConfigError, match="scorer.knn: reads.*embed.enabled"):
        smoke_cfg("scorer.knn=3")
    with pytest.raises(ConfigError, match="scorer.knn: needs embed.constraint: 0"):
        smoke_cfg(*EMBED, "scorer.knn=3")
    on, plain = smoke_cfg(*BALANCE_EMBED, "scorer.knn=3"), smoke_cfg()
    assert "embed" in GRAPH.key_material(on, "scorer")["upstream"]
    assert "embed" not in GRAPH.key_material(smoke_cfg(*BALANCE_EMBED), "scorer")["upstream"]
    assert GRAPH.stage_key(smoke_cfg(*BALANCE_EMBED), "scorer") == GRAPH.stage_key(plain, "scorer")
    hashed = GRAPH.key_material(smoke_cfg(*BALANCE_EMBED), "scorer")["config"]["scorer"]
    assert "knn" not in hashed and "difficulty" not in hashed
    assert GRAPH.key_material(on, "scorer")["config"]["scorer"]["knn"] == 3


def test_test_pools_are_about_a_fold_s_size():
    ids = [f"t{j}" for j in range(1000)]
    pools = knn.test_pools(ids, 300, 0)
    assert pools.nunique() == 3 and pools.value_counts().between(333, 334).all()
    assert knn.test_pools(ids[:400], 400, 0).nunique() == 1
    assert (knn.test_pools(ids, 300, 0) == pools).all()  # seeded


@pytest.mark.slow
def test_scorer_stage_with_knn_features(smoke_cfg, monkeypatch):
    cfg = smoke_cfg(*BALANCE_EMBED, "scorer.knn=2")
    seen = []
    search = knn.pool_neighbours

    def spy(emb, pools, k):
        seen.append(pools.copy())
        return search(emb, pools, k)

    monkeypatch.setattr(knn, "pool_neighbours", spy)
    folder, _ = cache.run_stage(GRAPH, cfg, "scorer")
    # OOF images search their own fold only (the honest part), test images a test pool.
    folds = fileio.read_csv(cache.stage_dir(GRAPH, cfg, "folds") / "folds.csv", dtype={"id": str}).set_index("id")["fold"]
    oof, test = seen
    assert (oof.to_numpy() == folds.loc[oof.index].to_numpy()).all() and oof.nunique() == folds.nunique()
    assert len(test) == 12 and test.nunique() == max(1, round(12 / (len(folds) / folds.nunique())))
    feats = fileio.read_csv(folder / "oof_features.csv")
    assert {"nn_p_mean", "nn_sim_max"} <= set(feats.columns) and feats["nn_p_mean"].notna().all()
    nested = fileio.read_csv(folder / "nested_scores.csv")
    assert len(nested) == len(feats) and {"fold", "grid", "none"} <= set(nested.columns)
    importance = fileio.read_csv(folder / "feature_importance.csv")
    assert "nn_p_mean" in set(importance["feature"])

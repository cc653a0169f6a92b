"""The embed stage: metric-learned embeddings with a classification constraint, PCA,
neighbours, clusters, near-duplicates, adversarial validation and cluster folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import typed
from pipeline.config.embed import EmbedCfg
from pipeline.core import fileio
from pipeline.core.errors import ConfigError
from pipeline.engine import cache
from pipeline.neighbours import retrieval
from pipeline.stages import GRAPH
from pipeline.training import embedding

EMBED = [
    "embed.enabled=true",
    "embed.model.encoder_weights=null",
    "embed.size=32",
    "embed.train.epochs=2",
    "embed.train.batch_size=16",
    "embed.pca_dim=8",
    "embed.clusters=6",
    "embed.neighbours=3",
]


def test_nt_xent_rewards_matching_views():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    same = embedding.nt_xent(torch.cat([a, a]), 0.2)
    other = embedding.nt_xent(torch.cat([a, torch.nn.functional.normalize(torch.randn(8, 16), dim=1)]), 0.2)
    assert same < 0.5 < 2.0 < other


def test_constraint_adds_the_label_heads_on_labelled_images_only(smoke_cfg):
    cfg: EmbedCfg = smoke_cfg(*EMBED).embed
    out = {"z": torch.nn.functional.normalize(torch.randn(4, 8), dim=1), "empty": torch.zeros(4), "bins": torch.zeros(4, 4)}
    batch = {"bin": torch.tensor([0, -1, 0, -1])}  # one labelled empty image, one test image, two views each
    with_c = embedding.embed_task(cfg, None).loss(out, batch, 0)
    cfg.constraint = 0.0
    without = embedding.embed_task(cfg, None).loss(out, batch, 0)
    assert {"empty", "bin"} <= with_c[1].keys() and not {"empty", "bin"} & without[1].keys()
    assert with_c[0] > without[0]
    # Test images alone: no label term however large the weight.
    cfg.constraint = 5.0
    assert embedding.embed_task(cfg, None).loss(out, {"bin": torch.full((4,), -1)}, 0)[0] == pytest.approx(float(without[0]))


def test_neighbours_rank_others_by_similarity():
    emb = retrieval.reduce(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [1, 1]], float), 0, False, 0)[0]
    table = retrieval.neighbours(emb, list("abcde"), k=2)
    assert (table.groupby("id").size() == 2).all() and (table["id"] != table["neighbour_id"]).all()
    first = table[table["rank"] == 1].set_index("id")["neighbour_id"]
    assert first["a"] == "b" and first["c"] == "d"
    assert table.groupby("id")["similarity"].apply(lambda s: s.is_monotonic_decreasing).all()


def test_pca_whitening_and_dimension():
    x = np.random.default_rng(0).normal(size=(50, 20)) * np.linspace(10, 0.1, 20)
    emb, pca = retrieval.reduce(x, 5, True, 0)
    assert emb.shape == (50, 5) and np.allclose(np.linalg.norm(emb, axis=1), 1)
    assert np.allclose(pca.transform(x).std(0, ddof=1), 1, atol=1e-6)  # whitened before the L2 step


def test_duplicates_are_each_pair_once_with_their_kind():
    table = pd.DataFrame(
        {"id": ["a", "b", "a", "c"], "neighbour_id": ["b", "a", "c", "a"], "rank": [1, 1, 2, 1], "similarity": [0.99, 0.99, 0.5, 0.5]}
    )
    pairs = retrieval.duplicates(table, {"a": "test", "b": "train", "c": "train"}, 0.9)
    assert pairs[["a", "b", "kind"]].values.tolist() == [["a", "b", "train-test"]]


def test_adversarial_auc_tells_shifted_test_sets_apart():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(200, 4))
    is_test = np.arange(200) >= 120
    assert abs(retrieval.adversarial(same, is_test, 0)[0] - 0.5) < 0.15
    shifted = same + is_test[:, None] * 2.0
    auc, likeness = retrieval.adversarial(shifted, is_test, 0)
    assert auc > 0.95 and likeness[is_test].mean() > likeness[~is_test].mean()


def test_recall_of_grid_neighbours():
    pos = pd.DataFrame({"id": list("abcd"), "section": 0, "row": [0, 0, 1, 5], "col": [0, 1, 0, 5]})
    truth = retrieval.grid_neighbours(pos)
    assert truth == {"a": {"b", "c"}, "b": {"a"}, "c": {"a"}, "d": set()}
    table = pd.DataFrame({"id": ["a", "a", "b", "c"], "neighbour_id": ["b", "d", "a", "d"], "rank": [1, 2, 1, 1]})
    recall, n = retrieval.recall_at(table, truth, 1)
    assert n == 3 and recall == pytest.approx((0.5 + 1 + 0) / 3)


def test_folds_clusters_needs_the_embed_stage(smoke_cfg):
    with pytest.raises(ConfigError, match="folds.clusters"):
        smoke_cfg("folds.clusters=true")


def test_embed_is_an_upstream_of_folds_only_with_cluster_folds(smoke_cfg):
    plain = smoke_cfg()
    assert GRAPH.stage_key(smoke_cfg(*EMBED), "folds") == GRAPH.stage_key(plain, "folds")
    assert GRAPH.stage_key(smoke_cfg(*EMBED, "folds.clusters=true"), "folds") != GRAPH.stage_key(plain, "folds")
    assert "embed" in GRAPH.key_material(smoke_cfg(*EMBED, "folds.clusters=true"), "folds")["upstream"]


@pytest.mark.slow
def test_embed_stage_artifacts_and_cluster_folds(smoke_cfg):
    cfg = smoke_cfg(*EMBED, "folds.clusters=true")
    folder, _ = cache.run_stage(GRAPH, cfg, "embed")
    npz = np.load(folder / "embeddings.npz")
    n = len(npz["ids"])
    assert npz["embedding"].shape == (n, 8) and npz["raw"].shape[0] == n and (npz["split"] == "test").sum() == 12
    table = fileio.read_csv(folder / "neighbours.csv", dtype={"id": str, "neighbour_id": str})
    assert (table.groupby("id").size() == 3).all() and len(table) == 3 * n and (table["id"] != table["neighbour_id"]).all()
    manifest = cache.read_manifest(folder)["metrics"]
    assert 0 <= manifest["view_accuracy"] <= 1 and 0 <= manifest["adversarial_auc"] <= 1
    assert manifest["duplicates_flat_pairs"] >= 0 and "flat" in fileio.read_csv(folder / "duplicates.csv", nrows=0).columns
    assert (folder / "duplicates.png").exists() and (folder / "adversarial.csv").exists()
    clusters = fileio.read_csv(folder / "clusters.csv", dtype={"id": str}).set_index("id")["cluster"]
    folds_dir, _ = cache.run_stage(GRAPH, cfg, "folds")
    folds = fileio.read_csv(folds_dir / "folds.csv", dtype={"id": str})
    # Every cluster's train images share one fold.
    assert (folds.assign(c=clusters.loc[folds["id"]].to_numpy()).groupby("c")["fold"].nunique() == 1).all()
    assert typed.section(cfg, "folds.clusters") is True

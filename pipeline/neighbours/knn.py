"""KNN features for the LB-score predictor: what the models predicted for an image's nearest
neighbours in the embed stage's embedding (their predicted coverage, emptiness, uncertainty),
weighted by similarity.

Neighbours are searched within a pool that no model scoring the image has seen: an OOF
image's among the train images of its own fold (their OOF maps come from the model that held
that fold out), a test image's among the test images, split into random pools of a fold's
size. Neighbours' labels are never read: in CV the same-fold neighbours (mosaic or cluster
groups keep touching tiles in one fold) would have labels that a test image's test neighbours
do not have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import UserError
from pipeline.neighbours import retrieval

# The per-image features (pipeline.postprocessing.features) averaged over the neighbours.
COLUMNS = ("p_mean", "area_0.5", "uncertain", "cls_prob")


def read_embeddings(embed_dir: Path, split: str) -> dict[str, np.ndarray]:
    """id -> L2-normalised embedding (after the embed stage's PCA) of the `split` images (train
    or test: a test image may share an id with a train image)."""
    npz = np.load(embed_dir / "embeddings.npz", allow_pickle=False)
    keep = npz["split"].astype(str) == split
    return dict(zip(npz["ids"].astype(str)[keep].tolist(), npz["embedding"][keep], strict=True))


def test_pools(ids: list[str], fold_size: float, seed: int) -> pd.Series:
    """The test images in seeded random pools of about an OOF fold's size: an OOF image finds
    its neighbours among one fold, and a pool many times larger would hold closer neighbours
    than the LightGBM model ever saw."""
    n_pools = max(1, round(len(ids) / max(fold_size, 1)))
    return pd.Series(np.random.default_rng(seed).permutation(len(ids)) % n_pools, index=ids)


def pool_neighbours(emb: dict[str, np.ndarray], pools: pd.Series, k: int) -> pd.DataFrame:
    """The k nearest others of each image within its pool (`pools`: id -> pool label):
    id, neighbour_id, rank, similarity."""
    missing = sorted(set(pools.index) - set(emb))
    if missing:
        raise UserError(f"scorer.knn: the embed stage has no embedding for image {missing[0]!r} ({len(missing)} missing)")
    parts = []
    for _, members in pools.groupby(pools):
        ids = members.index.tolist()
        parts.append(retrieval.neighbours(np.stack([emb[i] for i in ids]), ids, k))
    return pd.concat(parts, ignore_index=True)


def knn_features(table: pd.DataFrame, neighbours: pd.DataFrame, ids: list[str], k: int = 1) -> pd.DataFrame:
    """Per row of the feature `table` (image-major: the k rows of ids[0], then of ids[1], ...),
    the similarity-weighted mean of COLUMNS over its neighbours' rows of the same class, and the
    neighbours' largest and mean similarity (NaN for an image without neighbours)."""
    position = {img: i for i, img in enumerate(ids)}
    values = table[list(COLUMNS)].to_numpy(float)
    out = np.full((len(table), len(COLUMNS) + 2), np.nan)
    for img, g in neighbours.groupby("id"):
        others = np.array([position[n] for n in g["neighbour_id"]]) * k
        sim = g["similarity"].to_numpy(float)
        w = np.clip(sim, 0, None)
        w = w / w.sum() if w.sum() > 0 else np.full(len(sim), 1 / len(sim))
        for c in range(k):
            r = position[img] * k + c
            out[r, : len(COLUMNS)] = w @ values[others + c]
            out[r, len(COLUMNS) :] = sim.max(), sim.mean()
    names = [f"nn_{c}" for c in COLUMNS] + ["nn_sim_max", "nn_sim_mean"]
    return pd.DataFrame(out, index=table.index, columns=names)

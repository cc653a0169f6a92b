"""Mosaic pair precision and recall on the demo (issue 18): the touching pairs that
pipeline/neighbours/mosaic.py finds among the train and test tiles together, against the true tile
positions (tile_positions.csv), for the edge costs alone and for the edge costs restricted to
each tile's nearest neighbours in the embed stage's embedding (a pair is a candidate only when
one tile is among the other's `--k` nearest).

  .venv/bin/python bench/mosaic_pairs.py --config configs/demo_embed.yaml [--set embed.constraint=0] [--k 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import loader as config  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.engine import cache  # noqa: E402
from pipeline.neighbours import mosaic  # noqa: E402
from pipeline.stages import GRAPH  # noqa: E402


def true_pairs(positions: pd.DataFrame) -> set[tuple[str, str, str]]:
    """(left or upper id, right or lower id, axis) of every pair of tiles that touch."""
    at = {(r.section, r.row, r.col): str(r.id) for r in positions.itertuples()}
    out = set()
    for (s, r, c), i in at.items():
        if (s, r, c + 1) in at:
            out.add((i, at[(s, r, c + 1)], "h"))
        if (s, r + 1, c) in at:
            out.add((i, at[(s, r + 1, c)], "v"))
    return out


def found_pairs(tiles: np.ndarray, ids: list[str], margin: float, allowed: np.ndarray | None) -> set[tuple[str, str, str]]:
    """mosaic.find_pairs' pairs, with every cost outside `allowed` (N x N) set to inf."""
    out = set()
    for axis in ("h", "v"):
        for cost in mosaic.edge_costs(tiles, axis).values():
            if allowed is not None:
                cost[~allowed] = np.inf
            out |= {(ids[i], ids[j], axis) for i, j, _ in mosaic.mutual_pairs(cost, margin)}
    return out


def knn_mask(emb: np.ndarray, k: int) -> np.ndarray:
    """N x N: j among i's k nearest by cosine similarity, or i among j's."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argpartition(-sim, k, axis=1)[:, :k]
    mask = np.zeros(sim.shape, bool)
    mask[np.repeat(np.arange(len(emb)), k), top.ravel()] = True
    return mask | mask.T


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo_embed.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--positions", default="data/demo/tile_positions.csv")
    ap.add_argument("--k", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--margins", type=float, nargs="+", default=[0.8, 0.6])
    args = ap.parse_args()
    cfg = config.load(args.config, args.set)
    folder, _ = cache.run_stage(GRAPH, cfg, "embed")
    npz = np.load(folder / "embeddings.npz")
    emb_of = dict(zip(npz["ids"].astype(str).tolist(), npz["embedding"], strict=True))
    stores = [ArrayStore(cache.load_upstream(GRAPH, cfg, s), name) for s, name in (("ingest", "images"), ("ingest_test", "test_images"))]
    ids = [str(i) for s in stores for i in s.ids]
    tiles = mosaic.grayscale_tiles([np.asarray(s.get(i)) for s in stores for i in s.ids])
    truth = true_pairs(pd.read_csv(args.positions, dtype={"id": str}))
    emb = np.stack([emb_of[i] for i in ids])
    print(f"{len(ids)} train and test tiles, {len(truth)} touching pairs")
    print("| candidates | margin | pairs found | precision | recall |")
    print("|---|---|---|---|---|")
    for margin in args.margins:
        for k in [0, *args.k]:
            found = found_pairs(tiles, ids, margin, knn_mask(emb, k) if k else None)
            hits = len(found & truth)
            label = "all tiles (edges alone)" if not k else f"{k} nearest embeddings"
            print(f"| {label} | {margin} | {len(found)} | {hits / max(len(found), 1):.3f} | {hits / len(truth):.3f} |")


if __name__ == "__main__":
    main()

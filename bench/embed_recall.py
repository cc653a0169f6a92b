"""Retrieval quality of the embed stage on the demo (issue 18): recall@k of each tile's true
grid neighbours (tile_positions.csv) among its k nearest embeddings, train and test tiles
together, for the stage's pooled embedding as it is, after PCA, and after whitened PCA, and for
the untrained (ImageNet) encoder's pooled features as a baseline. Each config's embed stage runs
first if needed (from cache otherwise); run it once per setting, e.g. with and without the
classification constraint:

  .venv/bin/python bench/embed_recall.py --config configs/demo_embed.yaml [--set embed.constraint=0] [--k 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import loader as config  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.engine import cache  # noqa: E402
from pipeline.neighbours import retrieval  # noqa: E402
from pipeline.stages import GRAPH  # noqa: E402
from pipeline.training import embedding  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo_embed.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--positions", default="data/demo/tile_positions.csv")
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    cfg = config.load(args.config, args.set)
    folder, _ = cache.run_stage(GRAPH, cfg, "embed")
    npz = np.load(folder / "embeddings.npz")
    ids = [str(i) for i in npz["ids"]]
    truth = retrieval.grid_neighbours(pd.read_csv(args.positions, dtype={"id": str}))
    rows = {}
    variants = {
        "pooled, no PCA": (npz["raw"], 0, False),
        "PCA": (npz["raw"], cfg.embed.pca_dim, False),
        "PCA whitened": (npz["raw"], cfg.embed.pca_dim, True),
    }
    base = _untrained(cfg)
    variants |= {"untrained encoder, no PCA": (base, 0, False), "untrained encoder, PCA whitened": (base, cfg.embed.pca_dim, True)}
    for name, (raw, dim, whiten) in variants.items():
        emb = retrieval.reduce(raw, dim, whiten, cfg.experiment.seed)[0]
        table = retrieval.neighbours(emb, ids, args.k)
        rows[name], n = retrieval.recall_at(table, {i: truth.get(i, set()) for i in ids}, args.k)
    print(f"{args.config} {' '.join(args.set)}: recall@{args.k} of true grid neighbours over {n} tiles with one")
    for name, r in rows.items():
        print(f"| {name} | {r:.4f} |")


def _untrained(cfg) -> np.ndarray:
    ingest, ingest_test = cache.load_upstream(GRAPH, cfg, "ingest"), cache.load_upstream(GRAPH, cfg, "ingest_test")
    train = ArrayStore(ingest, "images")
    images = embedding.Images.of(train, np.zeros(len(train.ids)), ArrayStore(ingest_test, "test_images"))
    torch.manual_seed(cfg.experiment.seed)
    model = embedding.EmbedNet(cfg.embed.model, images.in_channels)
    return embedding.extract(model, images, cfg.embed.size, torch.device("cpu"))


if __name__ == "__main__":
    main()

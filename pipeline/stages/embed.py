"""Embed stage: image embeddings of train and test together (pipeline/training/embedding.py), then what
the later stages and the reader use (pipeline/neighbours/retrieval.py): the PCA, neighbours.csv,
clusters.csv, near-duplicates (duplicates.csv, duplicates.png) and adversarial validation
(adversarial.csv: each image's out-of-fold test-likeness)."""

from __future__ import annotations

import joblib
import numpy as np
import pandas as pd

from pipeline.core import fileio
from pipeline.core.runtime import pick_device
from pipeline.core.store import ArrayStore
from pipeline.data.tables import read_train_table
from pipeline.engine.cache import Context
from pipeline.neighbours import retrieval
from pipeline.training import embedding

EMBEDDINGS = "embeddings.npz"


def run(ctx: Context) -> dict:
    cfg, ecfg = ctx.cfg, ctx.cfg.embed
    if not ecfg.enabled:
        ctx.dir.mkdir(parents=True, exist_ok=True)
        return {"enabled": False}
    train_store, test_store = ArrayStore(ctx.upstream["ingest"], "images"), ArrayStore(ctx.upstream["ingest_test"], "test_images")
    cover = read_train_table(ctx.upstream["ingest"]).set_index("id")["coverage"]
    images = embedding.Images.of(train_store, cover.loc[train_store.ids].to_numpy(), test_store)
    ids = [*train_store.ids, *test_store.ids]
    split = np.array(["train"] * len(train_store.ids) + ["test"] * len(test_store.ids))
    device, seed = pick_device(cfg.experiment), cfg.experiment.seed + 300
    model, fit = embedding.train(ecfg, images, ctx.dir / "model", device, seed)
    raw = embedding.extract(model, images, ecfg.size, device)
    emb, pca = retrieval.reduce(raw, ecfg.pca_dim, ecfg.whiten, seed)
    fileio.save_npz(ctx.dir / EMBEDDINGS, ids=np.array(ids), split=split, raw=raw.astype(np.float32), embedding=emb.astype(np.float32))
    if pca is not None:
        joblib.dump(pca, ctx.dir / "pca.joblib")
    table = retrieval.neighbours(emb, ids, ecfg.neighbours)
    fileio.write_csv(ctx.dir / "neighbours.csv", table)
    groups = retrieval.clusters(emb, ecfg.clusters, seed)
    fileio.write_csv(ctx.dir / "clusters.csv", pd.DataFrame({"id": ids, "split": split, "cluster": groups}))
    metrics = {"view_accuracy": round(float(fit["best_score"]), 4)}
    metrics |= _duplicates(ctx, table, dict(zip(ids, split, strict=True)), images, ids)
    auc, likeness = retrieval.adversarial(emb, split == "test", seed)
    fileio.write_csv(ctx.dir / "adversarial.csv", pd.DataFrame({"id": ids, "split": split, "test_likeness": likeness}))
    metrics |= {"adversarial_auc": round(auc, 4), "cluster_sizes": np.bincount(groups).tolist()}
    if pca is not None:
        metrics["pca_explained"] = round(float(pca.explained_variance_ratio_.sum()), 4)
    if ecfg.patches:
        patch_emb, rows = embedding.extract_patches(model, images, ecfg.size, device)
        fileio.save_npz(ctx.dir / "patch_embeddings.npz", embedding=patch_emb, image=np.array(ids)[rows[:, 0]], y=rows[:, 1], x=rows[:, 2])
        metrics["patches"] = len(rows)
    return metrics


def _duplicates(ctx: Context, table: pd.DataFrame, split: dict[str, str], images: embedding.Images, ids: list[str]) -> dict:
    pairs = retrieval.duplicates(table, split, ctx.cfg.embed.duplicate_similarity)
    position = {i: n for n, i in enumerate(ids)}
    flat = {i: float(np.asarray(images.get(position[i])).std()) < retrieval.FLAT_STD for i in {*pairs["a"], *pairs["b"]}}
    pairs["flat"] = [flat[a] and flat[b] for a, b in zip(pairs["a"], pairs["b"], strict=True)]
    fileio.write_csv(ctx.dir / "duplicates.csv", pairs)
    retrieval.duplicate_figure(pairs, lambda i: images.get(position[i]), ctx.dir / "duplicates.png")
    counts = pairs.loc[~pairs["flat"], "kind"].value_counts()
    out = {f"duplicates_{k}": int(counts.get(k, 0)) for k in ("train-train", "train-test", "test-test")}
    return out | {"duplicates_flat_pairs": int(pairs["flat"].sum())}

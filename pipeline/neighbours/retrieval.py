"""What the embed stage derives from image embeddings, all with scikit-learn and all without
labels: PCA (optionally whitened: "for retrieval, a PCA on top gains at least 2 points"),
nearest neighbours, KMeans clusters, near-duplicate pairs, adversarial validation (how well a
classifier tells train from test), and the recall of known neighbours (the demo's grid).

Every fit here sees train and test embeddings together and no mask: nothing in it is scored
against labels, so fitting on everything leaks nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from pipeline.evaluation.roc import safe_auc


def reduce(emb: np.ndarray, dim: int, whiten: bool, seed: int) -> tuple[np.ndarray, PCA | None]:
    """Embeddings projected on their first `dim` principal components (0: unchanged), whitened
    when asked, L2-normalised again (cosine similarity is a dot product)."""
    if dim == 0:
        return normalize(emb), None
    pca = PCA(n_components=min(dim, *emb.shape), whiten=whiten, random_state=seed).fit(emb)
    return normalize(pca.transform(emb)), pca


def neighbours(emb: np.ndarray, ids: list[str], k: int) -> pd.DataFrame:
    """The k nearest other images of each image by cosine similarity: id, neighbour_id, rank
    (1 = nearest), similarity."""
    k = min(k, len(ids) - 1)
    if k < 1:
        return pd.DataFrame(columns=["id", "neighbour_id", "rank", "similarity"])
    dist, idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(emb).kneighbors(emb)
    rows = []
    for i, (d, j) in enumerate(zip(dist, idx, strict=True)):
        others = [(dd, jj) for dd, jj in zip(d, j, strict=True) if jj != i][:k]  # an exact twin may rank before itself
        rows += [(ids[i], ids[jj], r + 1, round(1.0 - float(dd), 6)) for r, (dd, jj) in enumerate(others)]
    return pd.DataFrame(rows, columns=["id", "neighbour_id", "rank", "similarity"])


def clusters(emb: np.ndarray, n: int, seed: int) -> np.ndarray:
    """KMeans cluster per image (at most one cluster per image)."""
    return KMeans(n_clusters=min(n, len(emb)), n_init=4, random_state=seed).fit_predict(emb)


def duplicates(table: pd.DataFrame, split: dict[str, str], threshold: float) -> pd.DataFrame:
    """Pairs (each once) among the neighbours at or above `threshold`, with their kind:
    train-train, train-test or test-test."""
    near = table[table["similarity"] >= threshold]
    a, b = near["id"].astype(str), near["neighbour_id"].astype(str)
    pairs = pd.DataFrame({"a": np.where(a < b, a, b), "b": np.where(a < b, b, a), "similarity": near["similarity"].to_numpy()})
    pairs = pairs.drop_duplicates(["a", "b"]).sort_values("similarity", ascending=False, kind="stable")
    kinds = [split[x] + "-" + split[y] for x, y in zip(pairs["a"], pairs["b"], strict=True)]
    return pairs.assign(kind=[k if k != "test-train" else "train-test" for k in kinds]).reset_index(drop=True)


def adversarial(emb: np.ndarray, is_test: np.ndarray, seed: int, folds: int = 5) -> tuple[float, np.ndarray]:
    """Adversarial validation: the cross-validated AUC of a logistic regression telling test
    from train, and each image's out-of-fold probability of being a test image (its
    "test-likeness"). An AUC near 0.5: the two sets look alike."""
    y = np.asarray(is_test, dtype=int)
    if min(y.sum(), len(y) - y.sum()) < folds:
        return float("nan"), np.full(len(y), np.nan)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # Balanced classes: with 3,200 train and 3,000 test tiles, or the demo's 3:1, the
    # probabilities should not just echo the share of test images.
    clf = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced")
    prob = cross_val_predict(clf, emb, y, cv=cv, method="predict_proba")[:, 1]
    return safe_auc(y.astype(bool), prob), prob


def grid_neighbours(positions: pd.DataFrame) -> dict[str, set[str]]:
    """Each tile's 4-connected neighbours from a table id, section, row, col (the demo's
    tile_positions.csv), among the tiles the table lists."""
    at = {(r.section, r.row, r.col): str(r.id) for r in positions.itertuples()}
    out = {}
    for (s, r, c), i in at.items():
        out[i] = {at[p] for p in ((s, r - 1, c), (s, r + 1, c), (s, r, c - 1), (s, r, c + 1)) if p in at}
    return out


def recall_at(table: pd.DataFrame, truth: dict[str, set[str]], k: int) -> tuple[float, int]:
    """Mean over the images with a true neighbour of the share of their true neighbours found
    among their k nearest, and how many such images there are."""
    found = table[table["rank"] <= k].groupby("id")["neighbour_id"].agg(lambda s: set(map(str, s)))
    shares = [len(truth[i] & found.get(i, set())) / len(truth[i]) for i in truth if truth[i]]
    return (float(np.mean(shares)) if shares else float("nan")), len(shares)


# Images whose pixels vary less than this (grey levels) are blank: all alike, no near-duplicates
# worth showing.
FLAT_STD = 1.0


def duplicate_figure(pairs: pd.DataFrame, image, path, n: int = 8) -> None:
    """The most similar pairs side by side (one per first image, blank pairs, a `flat`
    column, last), with their similarity and kind; `image(id)` returns an image array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "flat" in pairs.columns:  # blank tiles (TGS has ~150) would fill the figure with black pairs
        pairs = pd.concat([pairs[~pairs["flat"]], pairs[pairs["flat"]]])
    top = pairs.drop_duplicates("a").head(n)  # one pair per image: the figure shows n images' closest
    fig, axes = plt.subplots(max(len(top), 1), 2, figsize=(4, 2 * max(len(top), 1)), squeeze=False)
    for row, pair in zip(axes, top.itertuples(), strict=False):
        for ax, i in zip(row, (pair.a, pair.b), strict=True):
            img = np.asarray(image(i))
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img[..., :3], cmap="gray")
            ax.set_title(f"{i} ({pair.kind}, {pair.similarity:.3f})" if ax is row[0] else str(i), fontsize=6)
    for ax in axes.ravel():
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)

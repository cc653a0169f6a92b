"""The seed's sub-class trick: split one binary class into K training classes by size,
location or texture, train K softmax channels, and merge them back into one probability map
(1 - background: pipeline.inference.predict.squash with merge).

The split is a fit (area or position quantiles, texture k-means centres): it is fitted on a
fold's training masks only, so that a validation image's mask never shapes the targets a model
is trained on (a second-order leak otherwise). Size and location label each connected object
as a whole; texture labels pixels by their local mean and contrast, smoothed so that the
sub-classes form regions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.cluster import KMeans

BY = ("size", "location", "texture")
TEXTURE_WINDOW = 7  # px: the local statistics' window
TEXTURE_SAMPLE = 20000  # mask pixels the k-means is fitted on


@dataclass(frozen=True)
class Split:
    """A fitted split: `n` sub-classes `by` a criterion, with its bin edges or k-means centres."""

    by: str
    n: int
    edges: tuple[float, ...] = ()  # size: log-area edges; location: centroid-row edges (0..1)
    centres: tuple[tuple[float, float], ...] = ()  # texture: (local mean, local std), sorted by mean

    def label(self, mask: np.ndarray, image: np.ndarray) -> np.ndarray:
        """(h, w) uint8 label map: 0 background, 1..n the sub-class of each mask pixel."""
        if not mask.any():
            return np.zeros(mask.shape, np.uint8)
        if self.by == "texture":
            return _texture_labels(mask, image, np.array(self.centres))
        n, comp, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        value = np.log(stats[1:, cv2.CC_STAT_AREA]) if self.by == "size" else centroids[1:, 1] / mask.shape[0]
        per_comp = np.concatenate([[0], np.digitize(value, self.edges) + 1]).astype(np.uint8)
        return per_comp[comp]


def _components(masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Log-area and relative centroid row of every connected object of the masks."""
    areas, rows = [], []
    for m in masks:
        n, _, stats, centroids = cv2.connectedComponentsWithStats(np.asarray(m, np.uint8), connectivity=8)
        areas += np.log(stats[1:, cv2.CC_STAT_AREA]).tolist()
        rows += (centroids[1:, 1] / m.shape[0]).tolist()
    return np.array(areas), np.array(rows)


def _local_stats(image: np.ndarray) -> np.ndarray:
    """(h, w, 2) local mean and standard deviation of a gray image (0..1)."""
    x = image.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x.mean(axis=2)
    k = (TEXTURE_WINDOW, TEXTURE_WINDOW)
    mean = cv2.blur(x, k)
    std = np.sqrt(np.maximum(cv2.blur(x * x, k) - mean * mean, 0))
    return np.stack([mean, std], axis=-1)


def _texture_labels(mask: np.ndarray, image: np.ndarray, centres: np.ndarray) -> np.ndarray:
    feats = _local_stats(image)
    dist = ((feats[:, :, None, :] - centres[None, None]) ** 2).sum(-1)
    nearest = dist.argmin(-1).astype(np.float32)
    # A median over the window keeps sub-classes as regions rather than salt-and-pepper.
    smooth = cv2.medianBlur(nearest.astype(np.uint8), 5)
    return np.where(mask > 0, smooth + 1, 0).astype(np.uint8)


def fit(by: str, n: int, masks: Sequence[np.ndarray], images: Sequence[np.ndarray], seed: int = 0) -> Split:
    """Fit a split on training masks (and their images, for texture)."""
    if by not in BY:
        raise ValueError(f"subclasses.by: {by!r} is not one of {', '.join(BY)}")
    if by == "texture":
        rng = np.random.default_rng(seed)
        feats = np.concatenate([_local_stats(img)[np.asarray(m) > 0] for m, img in zip(masks, images, strict=True)])
        if len(feats) < n:
            raise ValueError(f"subclasses: {len(feats)} mask pixels, fewer than {n} sub-classes")
        sample = feats[rng.choice(len(feats), min(TEXTURE_SAMPLE, len(feats)), replace=False)]
        km = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(sample)
        centres = km.cluster_centers_[np.argsort(km.cluster_centers_[:, 0])]
        if len(np.unique(np.round(centres, 6), axis=0)) < n:
            raise ValueError(f"subclasses: the mask pixels' texture has fewer than {n} distinct values")
        return Split(by, n, centres=tuple(map(tuple, centres.tolist())))
    areas, rows = _components(masks)
    values = areas if by == "size" else rows
    if len(values) < n:
        raise ValueError(f"subclasses: {len(values)} objects in the training masks, fewer than {n} sub-classes")
    edges = np.quantile(values, np.arange(1, n) / n)
    # Tied values (objects of one area, say) give equal edges and an empty sub-class.
    if len(np.unique(edges)) < n - 1 or len(np.unique(np.digitize(values, edges))) < n:
        raise ValueError(f"subclasses: the training objects' {by} values tie too often to split them into {n}")
    return Split(by, n, edges=tuple(edges.tolist()))

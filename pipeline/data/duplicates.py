"""Exact and near-duplicate images: the same picture saved twice, or one object photographed
again (magnetic_tile holds each tile under up to seven exposures, `exp0_...` to `exp6_...`).
A duplicate on both sides of a fold split scores a model on an image it has in effect seen:
`folds.duplicates` keeps each group in one fold, and `init` measures them."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Near: 16x16 thumbnails correlated at NEAR_CORR or more, confirmed at 64x64 (CONFIRM_CORR).
# An 8x8 average hash was tried first: its matches on the demo at 3 bits were all false (pixel
# correlation 0.04-0.50), and 16x16 alone joined tgs_salt tiles that correlate 0.76-0.92 at 64x64.
THUMB, NEAR_CORR, CONFIRM_CORR = 16, 0.98, 0.95
BLANK = 1.0  # gray levels of standard deviation: below it an image is blank (alike, not a copy)


def _thumb(a: np.ndarray, side: int = THUMB) -> np.ndarray:
    """Gray thumbnail, zero mean and unit norm: a dot product of two is their correlation."""
    gray = a if a.ndim == 2 else a.mean(axis=2)
    t = cv2.resize(gray.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA).ravel()
    t -= t.mean()
    return t / max(float(np.linalg.norm(t)), 1e-6)


def is_blank(a: np.ndarray) -> bool:
    return float(a.std()) < BLANK


def duplicate_pairs(images: list[np.ndarray]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of images that repeat: the same pixels, or near (blank images only
    pair with exact copies)."""
    pairs: set[tuple[int, int]] = set()  # an exact copy is near as well: counted once
    seen: dict[str, int] = {}
    for j, a in enumerate(images):
        digest = hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()
        if digest in seen:
            pairs.add((seen[digest], j))
        seen.setdefault(digest, j)
    textured = [j for j, a in enumerate(images) if not is_blank(a)]
    thumbs = np.stack([_thumb(images[j]) for j in textured]) if textured else np.zeros((0, THUMB * THUMB), np.float32)
    for start in range(0, len(thumbs), 1024):  # blocks of the correlation matrix: bounded memory
        corr = thumbs[start : start + 1024] @ thumbs.T
        for a, b in zip(*np.nonzero(corr >= NEAR_CORR), strict=True):
            i, j = textured[start + a], textured[b]
            if i < j and float(_thumb(images[i], 64) @ _thumb(images[j], 64)) >= CONFIRM_CORR:
                pairs.add((i, j))
    return sorted(pairs)


def duplicate_groups(arrays: dict[str, np.ndarray]) -> list[list[str]]:
    """Groups (two or more ids) linked by duplicate pairs, directly or through others: the
    connected components, as folds joins its groups (neighbours.mosaic.groups_from_pairs)."""
    ids = list(arrays)
    pairs = np.array(duplicate_pairs([arrays[k] for k in ids]), np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(ids), len(ids)))
    labels = connected_components(graph, directed=False)[1]
    groups: dict[int, list[str]] = {}
    for label, i in zip(labels, ids, strict=True):
        groups.setdefault(int(label), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]

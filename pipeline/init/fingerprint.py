"""What a dataset is, measured: sizes, channels, classes and their overlap, empty masks, mask
and object sizes per class, metadata columns, duplicate images. The rules (pipeline.init.rules)
read only this, so a plan can be checked against its fingerprint.json."""

from __future__ import annotations

import hashlib
from collections import Counter

import cv2
import numpy as np
import pandas as pd

from pipeline.data.ingest import Scan
from pipeline.data.multiclass import overlapping, unpack

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# Near-duplicates: 16x16 thumbnails correlated at least this much (a copy re-encoded, shifted
# in gain or offset, or cropped by a pixel).
THUMB, NEAR_CORR, CONFIRM_CORR = 16, 0.98, 0.95
BLANK = 1.0  # gray levels of standard deviation: below it an image is blank


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"q{int(q * 100):02d}": round(float(np.quantile(values, q)), 6) for q in QUANTILES}


def _sizes(arrays: dict[str, np.ndarray]) -> dict:
    hw = np.array([a.shape[:2] for a in arrays.values()], np.int64).reshape(-1, 2)
    if not len(hw):
        return {"count": 0}
    counts = Counter(map(tuple, hw.tolist()))
    (h, w), n = counts.most_common(1)[0]
    return {
        "count": len(hw),
        "height": _quantiles(hw[:, 0]) | {"min": int(hw[:, 0].min()), "max": int(hw[:, 0].max())},
        "width": _quantiles(hw[:, 1]) | {"min": int(hw[:, 1].min()), "max": int(hw[:, 1].max())},
        "distinct_sizes": len(counts),
        "most_common": {"height": h, "width": w, "share": round(n / len(hw), 4)},
    }


def _intensity(arrays: dict[str, np.ndarray]) -> dict:
    means = np.array([float(a.mean()) for a in arrays.values()])
    stds = np.array([float(a.std()) for a in arrays.values()])
    return {"mean": round(float(means.mean()), 3), "std": round(float(stds.mean()), 3)} if len(means) else {}


def _objects(plane: np.ndarray) -> np.ndarray:
    """Pixel areas of the 8-connected objects of one 0/1 plane."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(plane.astype(np.uint8), connectivity=8)
    return stats[1:n, cv2.CC_STAT_AREA].astype(np.int64)


def _class_stats(planes: list[np.ndarray]) -> dict:
    """One class over all train images: planes are (h, w) 0/1."""
    coverage = np.array([float(p.mean()) for p in planes])
    present = coverage > 0
    counts, areas, widths = [], [], []
    for p in planes:
        if p.any():
            a = _objects(p)
            counts.append(len(a))
            areas.extend(a.tolist())
            # The widest object's width (twice its largest inscribed radius): a membrane network
            # spans the image but is a few pixels wide, a salt body is as wide as it is long.
            widths.append(2.0 * float(cv2.distanceTransform(np.pad(p.astype(np.uint8), 1), cv2.DIST_L2, 3).max()))
    return {
        "images": int(present.sum()),
        "empty_share": round(float(1 - present.mean()), 4),
        "coverage": _quantiles(coverage[present]),
        "majority_share": round(float((coverage > 0.5).mean()), 4),  # images the class covers mostly
        "objects_per_image": _quantiles(np.array(counts)),
        "object_area": _quantiles(np.array(areas)),
        "object_width": _quantiles(np.array(widths)),
    }


def _classes(scan: Scan, names: tuple[str, ...]) -> tuple[dict, bool]:
    k = max(len(names), 1)
    ids = sorted(scan.masks)
    per_image = {i: unpack(scan.masks[i], k) if k > 1 else scan.masks[i][None] > 0 for i in ids}
    shared = any(overlapping(p) for p in per_image.values()) if k > 1 else False
    stats = {name: _class_stats([per_image[i][c] for i in ids]) for c, name in enumerate(names or ("foreground",))}
    return stats, not shared


def _thumb(a: np.ndarray, side: int = THUMB) -> np.ndarray:
    """Gray thumbnail, zero mean and unit norm: a dot product of two is their correlation."""
    gray = a if a.ndim == 2 else a.mean(axis=2)
    t = cv2.resize(gray.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA).ravel()
    t -= t.mean()
    return t / max(float(np.linalg.norm(t)), 1e-6)


def duplicate_groups(arrays: dict[str, np.ndarray]) -> list[list[str]]:
    """Groups of images that repeat exactly (same pixels) or nearly (16x16 thumbnails correlated
    at NEAR_CORR or more, confirmed at 64x64). Blank images (std below BLANK) are left out of the
    near ones: they are alike without being copies. An 8x8 average hash was tried first: its
    matches on the demo at 3 bits were all false (pixel correlation 0.04-0.50), and 16x16 alone
    joined tgs_salt tiles that correlate 0.76-0.92 at 64x64."""
    ids = list(arrays)
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    seen: dict[str, int] = {}
    for j, i in enumerate(ids):
        digest = hashlib.sha1(np.ascontiguousarray(arrays[i]).tobytes()).hexdigest()
        parent[root(j)] = root(seen.setdefault(digest, j))
    textured = [j for j, i in enumerate(ids) if float(arrays[i].std()) >= BLANK]
    thumbs = np.stack([_thumb(arrays[ids[j]]) for j in textured]) if textured else np.zeros((0, THUMB * THUMB), np.float32)
    for start in range(0, len(thumbs), 1024):
        corr = thumbs[start : start + 1024] @ thumbs.T
        for a, b in zip(*np.nonzero(corr >= NEAR_CORR), strict=True):
            if start + a < b and float(_thumb(arrays[ids[textured[start + a]]], 64) @ _thumb(arrays[ids[textured[b]]], 64)) >= CONFIRM_CORR:
                parent[root(textured[b])] = root(textured[start + a])
    groups: dict[int, list[str]] = {}
    for j, i in enumerate(ids):
        groups.setdefault(root(j), []).append(i)
    return [sorted(g) for g in groups.values() if len(g) > 1]


def _duplicates(groups: list[list[str]], arrays: dict[str, np.ndarray]) -> dict:
    blank = sum(float(a.std()) < BLANK for a in arrays.values())
    return {"groups": len(groups), "images": sum(len(g) for g in groups), "examples": [g[:5] for g in groups[:3]], "blank_images": blank}


def _metadata(meta: pd.DataFrame | None, n_train: int) -> list[dict]:
    if meta is None:
        return []
    out = []
    for col in [c for c in meta.columns if c != "id"]:
        values = meta[col].dropna()
        numeric = pd.api.types.is_numeric_dtype(values)
        distinct = int(values.nunique())
        # A column of repeated labels (a patient, a plate, a source image) groups folds.
        group = not numeric and 1 < distinct <= max(2, n_train // 2)
        out.append(
            {
                "column": str(col),
                "numeric": bool(numeric),
                "distinct": distinct,
                "missing": int(meta[col].isna().sum()),
                "group_candidate": group,
            }
        )
    return out


def fingerprint(scan: Scan, names: tuple[str, ...], groups: list[list[str]]) -> dict:
    """The dataset's fingerprint (JSON-ready); `names` the K class names (empty: one binary
    class), `groups` the duplicate groups (duplicate_groups)."""
    per_class, exclusive = _classes(scan, names)
    empty = np.array([not m.any() for m in scan.masks.values()])
    channels = 3 if any(a.ndim == 3 for a in [*scan.images.values(), *scan.tests.values()]) else 1
    return {
        "train": _sizes(scan.images),
        "test": _sizes(scan.tests),
        "channels": channels,
        "bit_depths": {str(k): v for k, v in sorted(scan.bits.items())},
        "intensity": {"train": _intensity(scan.images), "test": _intensity(scan.tests)},
        "classes": list(names),
        "k": max(len(names), 1),
        "exclusive_observed": exclusive,
        "empty_share": round(float(empty.mean()), 4) if len(empty) else 0.0,
        "per_class": per_class,
        "metadata": _metadata(scan.metadata, len(scan.images)),
        "duplicates": _duplicates(groups, {**scan.images, **scan.tests}),
    }

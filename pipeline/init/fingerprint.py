"""What a dataset is, measured: sizes, channels, classes and their overlap, empty masks, mask
and object sizes per class, metadata columns, duplicate images. The rules (pipeline.init.rules)
read only this, so a plan can be checked against its fingerprint.json."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pandas as pd

from pipeline.data.duplicates import is_blank
from pipeline.data.ingest import Scan
from pipeline.data.multiclass import overlapping, unpack

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


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


def duplicates_summary(groups: list[list[str]], arrays: dict[str, np.ndarray]) -> dict:
    """The fingerprint's `duplicates` entry: duplicate groups (data.duplicates) and blank images."""
    blank = sum(is_blank(a) for a in arrays.values())
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


def fingerprint(scan: Scan, names: tuple[str, ...]) -> dict:
    """The dataset's fingerprint (JSON-ready) but its duplicates (duplicates_summary, which do
    not depend on the masks); `names` the K class names (empty: one binary class)."""
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
    }

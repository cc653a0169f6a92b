"""K-class maps as (image, class) rows: the unit that the K-class metrics (mean Dice over image
and class pairs, the steel and clouds metric), the post-processing scorer and the submission
work on. A map is (h, w) for one binary class, as always, and (h, w, K) for K classes; a truth
mask is the packed uint8 store entry (bit k = class k, pipeline.data.multiclass). With K = 1 a row
is an image and its key is the image id, so binary tasks are unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.fileio import read_csv
from pipeline.data.multiclass import unpack


def planes(prob: np.ndarray) -> list[np.ndarray]:
    """One (h, w) map per class of a (h, w) or (h, w, K) map."""
    return [prob] if prob.ndim == 2 else [prob[..., k] for k in range(prob.shape[-1])]


def flat(maps: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Image maps -> row maps, image-major (image 0's classes, then image 1's ...)."""
    return [p for m in maps for p in planes(m)]


def truth_planes(mask: np.ndarray, k: int) -> list[np.ndarray]:
    """Boolean (h, w) truths of each class of a stored mask ((h, w) or (h, w, 1))."""
    m = mask[..., 0] if mask.ndim == 3 else mask
    if k == 1:
        return [m > 0]
    return [p.astype(bool) for p in unpack(m, k)]


def stack(rows: Sequence[np.ndarray], k: int) -> list[np.ndarray]:
    """Row maps back into image maps: (h, w) for k = 1, (h, w, k) otherwise."""
    if k == 1:
        return list(rows)
    return [np.stack(rows[i : i + k], axis=-1) for i in range(0, len(rows), k)]


def keys(ids: Sequence[str], names: Sequence[str]) -> list[str]:
    """Row keys: the image id for one class, `<id>_<class>` for K classes."""
    return list(ids) if len(names) <= 1 else [f"{i}_{n}" for i in ids for n in names]


def repeat(values: Sequence | np.ndarray, k: int) -> np.ndarray:
    """A per-image value for each of its k rows."""
    return np.repeat(np.asarray(values), k)


def class_of_row(n_images: int, k: int) -> np.ndarray:
    """The class index of each row (0 for a binary task)."""
    return np.tile(np.arange(k), n_images)


def per_class(table, columns: Sequence[str] = ("tgs", "dice")) -> dict:
    """{"per_class": {class: {metric: mean}}} of a row table with a `class` column; {} for a
    binary task's table (no class column)."""
    if "class" not in table.columns:
        return {}
    means = table.groupby("class", sort=False)[list(columns)].mean()
    return {"per_class": {str(c): {m: round(float(v), 4) for m, v in row.items()} for c, row in means.iterrows()}}


def read_rows(path: Path) -> pd.DataFrame:
    """A table of rows (id, and for K classes a class column) as written here: class names stay
    text, digits included (the steel competition's classes are 1..4)."""
    return read_csv(path, dtype={"class": str})


def cls_frame(ids: Sequence[str], probs: Sequence, classes: Sequence[str]) -> pd.DataFrame:
    """Image-level probabilities as a table: id, prob for one class; id, class, prob rows (image
    by image, classes in order) for K classes, from one probability vector per image."""
    if len(classes) <= 1:
        return pd.DataFrame({"id": list(ids), "prob": np.asarray(probs, dtype=float).reshape(len(ids))})
    # A value per image (NaN: no classifier) stands for each of its classes.
    values = np.broadcast_to(np.asarray(probs, dtype=float).reshape(len(ids), -1), (len(ids), len(classes)))
    return pd.DataFrame({"id": repeat(ids, len(classes)), "class": list(classes) * len(ids), "prob": values.reshape(-1)})


def row_probs(table: pd.DataFrame | None, ids: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """The `prob` of each row of `ids` (x `classes`) from a cls_frame-like table; NaN where the
    table (or the whole table) is missing."""
    if table is None:
        return np.full(len(ids) * max(len(classes), 1), np.nan)
    if len(classes) <= 1:
        return table.set_index("id")["prob"].reindex(list(ids)).to_numpy(dtype=float)
    index = pd.MultiIndex.from_arrays([repeat(ids, len(classes)), list(classes) * len(ids)])
    return table.set_index(["id", "class"])["prob"].reindex(index).to_numpy(dtype=float)

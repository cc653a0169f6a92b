"""Kaggle long-format RLE CSVs: one row per (image, class), for K-class masks.

Two layouts are in common use, and both are read and written here:
- `ImageId, ClassId, EncodedPixels` (the steel-defect competition): ClassId is a 1-based class
  index or a class name; a training CSV lists only the classes present in an image, so an image
  or class without a row is empty;
- `Image_Label, EncodedPixels` (the clouds competition): `<image>_<class>`, one row for every
  image and class, an empty cell for an absent class; a missing row is a problem.
An image key may carry its file extension (`0002cc93b.jpg`) or not; it is matched to the image
ids (file stems) either way. Each problem is one line naming the file and the CSV line."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.imageio import Report, read_id_csv
from pipeline.data.multiclass import Classes, overlapping
from pipeline.data.rle import rle_decode, rle_encode, validate_rle

RLE = "EncodedPixels"


@dataclass(frozen=True)
class Layout:
    """Which long format a CSV uses: its column names, and whether it lists every class."""

    name: str  # "class_rows" (ImageId, ClassId) or "image_label" (Image_Label)
    columns: tuple[str, ...]
    every_class: bool


CLASS_ROWS = Layout("class_rows", ("ImageId", "ClassId", RLE), every_class=False)
IMAGE_LABEL = Layout("image_label", ("Image_Label", RLE), every_class=True)
LAYOUTS = (CLASS_ROWS, IMAGE_LABEL)


def detect(columns: list[str]) -> Layout | None:
    """The layout whose columns a header holds, or None."""
    return next((lay for lay in LAYOUTS if set(lay.columns) <= set(columns)), None)


def _image_ids(keys: pd.Series, ids: Container[str]) -> list[str | None]:
    """Each image key as an image id (the key itself or its stem), None when no image has it."""
    return [k if k in ids else Path(k).stem if Path(k).stem in ids else None for k in keys]


def _split_labels(labels: pd.Series, classes: Classes) -> tuple[list[str], list[str], list[int | None]]:
    """`<image>_<class>` into image keys, class tokens and class indices, by the known class
    names, longest first (so that underscores in image or class names split right); a class
    is named here, never numbered: an unknown suffix has index None."""
    by_length = sorted(classes.names, key=len, reverse=True)
    keys, tokens, index = [], [], []
    for label in labels:
        name = next((c for c in by_length if label.endswith(f"_{c}")), None)
        keys.append(label[: -len(name) - 1] if name else label.rpartition("_")[0])
        tokens.append(name or f"in {label}")  # the whole label: which part is the class is unknown
        index.append(classes.names.index(name) if name else None)
    return keys, tokens, index


def _rows(report: Report, path: Path, layout: Layout, df: pd.DataFrame, classes: Classes) -> pd.DataFrame:
    """The CSV as (line, key, class index, rle) rows; unknown classes reported and dropped."""
    if layout is IMAGE_LABEL:
        keys, tokens, index = _split_labels(df["Image_Label"].fillna(""), classes)
    else:
        keys, tokens = list(df["ImageId"].fillna("")), list(df["ClassId"].fillna(""))
        index = [classes.index(t) for t in tokens]
    out = pd.DataFrame({"line": np.arange(2, len(df) + 2), "key": keys, "rle": df[RLE].fillna("").tolist()})
    for line, token, k in zip(out["line"], tokens, index, strict=True):
        if k is None:
            report.add(path, f"line {line}: unknown class {token!r}; classes: {', '.join(classes.names)}")
    out["cls"] = [-1 if k is None else k for k in index]
    return out[out["cls"] >= 0]


def _read(report: Report, path: Path, classes: Classes, note: str = "") -> tuple[Layout, pd.DataFrame] | None:
    """A long-format CSV's layout and its rows (_rows); None, with the problem reported, when it
    cannot be read or its columns are neither layout's (`note` appended to that line)."""
    df = read_id_csv(report, path, [RLE], text=True)
    if df is None:
        return None
    layout = detect(list(df.columns))
    if layout is None:
        expected = " or ".join(", ".join(lay.columns) for lay in LAYOUTS)
        report.add(path, f"columns {', '.join(df.columns)}: expected {expected}{note}")
        return None
    return layout, _rows(report, path, layout, df, classes)


def read_masks(
    report: Report, path: Path, classes: Classes, shapes: Mapping[str, tuple[int, int]], known: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Masks (K, h, w) uint8 per image id from a long-format CSV in either layout; every
    image in `shapes` gets one (all zero where it has no foreground row). Problems go to
    `report`: unknown columns, classes or images, malformed RLE, a (image, class) row twice,
    a missing row where the layout lists every class, classes overlapping in an exclusive task.
    Rows of an image in `known` but not in `shapes` (unreadable, reported elsewhere) are skipped."""
    found = _read(report, path, classes)
    if found is None:
        return {}
    layout, rows = found
    masks = {i: np.zeros((len(classes.names), *shape), np.uint8) for i, shape in shapes.items()}
    seen: dict[tuple[str, int], int] = {}
    # Image ids zipped in, not a column: pandas would turn None into NaN.
    for r, item_id in zip(rows.itertuples(), _image_ids(rows["key"], set(shapes) | (known or set())), strict=True):
        if r.key == "":
            report.add(path, f"line {r.line}: empty image key")
        elif item_id is None:
            report.add(path, f"line {r.line}: image {r.key} has no image file")
        elif item_id not in shapes:
            continue
        elif (item_id, r.cls) in seen:
            report.add(path, f"line {r.line}: image {r.key} class {classes.names[r.cls]} repeats line {seen[item_id, r.cls]}")
        elif error := validate_rle(r.rle, shapes[item_id]):
            seen[item_id, r.cls] = r.line
            report.add(path, f"line {r.line}: image {r.key} class {classes.names[r.cls]}: malformed RLE: {error}")
        else:
            seen[item_id, r.cls] = r.line
            masks[item_id][r.cls] = rle_decode(r.rle, shapes[item_id])
    if layout.every_class:
        _report_missing_rows(report, path, classes, shapes, seen)
    if classes.exclusive:
        _report_overlaps(report, path, classes, masks, seen)
    return masks


def _report_missing_rows(report: Report, path: Path, classes: Classes, shapes: Mapping, seen: dict) -> None:
    for item_id in sorted(shapes):
        missing = [c for k, c in enumerate(classes.names) if (item_id, k) not in seen]
        if missing:
            report.add(path, f"image {item_id}: no row for class(es) {', '.join(missing)}")


def _report_overlaps(report: Report, path: Path, classes: Classes, masks: dict, seen: dict) -> None:
    for item_id, planes in sorted(masks.items()):
        if shared := overlapping(planes):
            lines = ", ".join(str(seen[item_id, k]) for k in shared)
            names = " and ".join(classes.names[k] for k in shared)
            report.add(path, f"lines {lines}: image {item_id}: classes {names} overlap in an exclusive task")


def sample_keys(report: Report, path: Path, classes: Classes) -> tuple[Layout, list[str]] | None:
    """A long-format sample submission's layout and its image keys in order of first appearance
    (None, with the problem reported, when it is no long-format CSV of these classes)."""
    found = _read(report, path, classes, f" (data.classes names {len(classes)} classes)")
    if found is None:
        return None
    layout, rows = found
    return layout, list(dict.fromkeys(rows["key"]))


def image_ids(keys: list[str], ids: Container[str]) -> list[str | None]:
    """Each image key of a long-format CSV as an image id (the key or its stem; None: no image)."""
    return _image_ids(pd.Series(keys, dtype=str), ids)


def to_frame(layout: Layout, rles: Mapping[tuple[str, int], str], keys: list[str], classes: Classes) -> pd.DataFrame:
    """A long-format table, one row per image key (in `keys`' order) and class: the
    submission layout lists every class, an absent one with an empty cell; ClassId is the
    1-based class number."""
    rows = [(key, k, rles.get((key, k), "")) for key in keys for k in range(len(classes.names))]
    if layout is IMAGE_LABEL:
        return pd.DataFrame({"Image_Label": [f"{key}_{classes.names[k]}" for key, k, _ in rows], RLE: [r for *_, r in rows]})
    return pd.DataFrame({"ImageId": [key for key, *_ in rows], "ClassId": [k + 1 for _, k, _ in rows], RLE: [r for *_, r in rows]})


def encode(masks: Mapping[str, np.ndarray]) -> dict[tuple[str, int], str]:
    """RLE of each (image id, class) of (K, h, w) masks; empty classes are left out."""
    return {(i, k): rle_encode(m[k]) for i, m in masks.items() for k in range(len(m)) if m[k].any()}

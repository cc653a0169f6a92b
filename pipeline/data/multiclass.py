"""K-class training masks: how they are stored, and the two folder layouts they come from.

A mask is stored as one uint8 HxW array whose bit k is class k, so a binary mask (K = 1) is
stored exactly as before (0/1), overlapping classes (multilabel) fit, and K is at most 8.
Label images (pixel value = class index, 0 = background) and one mask folder per class both
become this; long-format RLE CSVs come through `longrle`."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.data.imagehead import DEFAULT_MAX_PIXELS
from pipeline.data.imageio import Loaded, Report, decode_file, pair_masks

MAX_CLASSES = 8  # bits of the uint8 mask store


@dataclass(frozen=True)
class Classes:
    """The task's class names, and whether classes exclude each other (a pixel has one class)."""

    names: tuple[str, ...]
    exclusive: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def problem(self) -> str | None:
        """What makes these names unusable (too many, empty, repeated), or None."""
        if len(self.names) > MAX_CLASSES:
            return f"{len(self.names)} classes; at most {MAX_CLASSES}"
        if any(not n.strip() for n in self.names):
            return "an empty class name"
        repeated = sorted({n for n in self.names if self.names.count(n) > 1})
        return f"class name(s) {', '.join(repeated)} given twice" if repeated else None

    def index(self, token: str) -> int | None:
        """0-based index of a class given by name or by 1-based number; None if unknown."""
        if token in self.names:
            return self.names.index(token)
        if token.isdecimal() and token.isascii() and 1 <= int(token) <= len(self.names):
            return int(token) - 1
        return None


def pack(planes: np.ndarray) -> np.ndarray:
    """(K, h, w) 0/1 planes -> (h, w) uint8 with bit k = class k."""
    if len(planes) > MAX_CLASSES:
        raise ValueError(f"{len(planes)} classes do not fit a uint8 mask (at most {MAX_CLASSES})")
    weights = (1 << np.arange(len(planes), dtype=np.uint16))[:, None, None]
    return (np.asarray(planes, np.uint16) * weights).sum(axis=0).astype(np.uint8)


def unpack(mask: np.ndarray, k: int) -> np.ndarray:
    """(h, w) packed mask -> (K, h, w) uint8 0/1 planes."""
    return ((np.asarray(mask)[None] >> np.arange(k, dtype=np.uint8)[:, None, None]) & 1).astype(np.uint8)


def overlapping(planes: np.ndarray) -> list[int]:
    """The classes that share a pixel with another class."""
    shared = planes.sum(axis=0, dtype=np.int32) > 1
    return np.flatnonzero(planes[:, shared].any(axis=1)).tolist() if shared.any() else []


def load_label(path: Path, k: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Loaded:
    """A label image (gray, value = class index 0..k) as a packed mask."""
    loaded = decode_file(path, max_pixels)
    if loaded.array is None:
        return loaded
    label = loaded.array
    if label.ndim == 3:
        if not (label == label[..., :1]).all():
            return Loaded(problem="color label image: expected one class index per pixel (gray)")
        label = label[..., 0]
    if label.max() > k:
        bad = np.unique(label[label > k])
        shown = ", ".join(str(int(v)) for v in bad[:3])
        return Loaded(problem=f"pixel value(s) {shown} are not class indices 0..{k} ({k} classes)")
    bits = np.where(label > 0, np.left_shift(1, np.maximum(label.astype(np.int32), 1) - 1), 0)
    return Loaded(array=bits.astype(np.uint8), bits=loaded.bits)


@dataclass(frozen=True)
class MaskSource:
    """Where K-class masks live: one folder of label images, or a folder per class."""

    folders: Path | Mapping[str, Path]
    classes: Classes
    threshold: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS


def read_folders(report: Report, pool: Executor, src: MaskSource, train: dict[str, Path], images: dict) -> dict[str, np.ndarray]:
    """Packed masks of every training image from label images or per-class folders; problems
    (missing, orphan, mis-sized masks, values that are no class, classes overlapping in an
    exclusive task) go to `report`."""
    if not isinstance(src.folders, Mapping):
        loader = partial(load_label, k=len(src.classes), max_pixels=src.max_pixels)
        return pair_masks(report, pool, train, images, Path(src.folders), src.threshold, src.max_pixels, loader)
    if set(src.folders) != set(src.classes.names):
        report.add("train_masks", f"folders for {', '.join(src.folders)}; classes are {', '.join(src.classes.names)}")
        return {}
    per_class = [pair_masks(report, pool, train, images, Path(src.folders[c]), src.threshold, src.max_pixels) for c in src.classes.names]
    masks = {}
    for item_id in sorted(set.intersection(*(set(m) for m in per_class))):
        planes = np.stack([m[item_id] for m in per_class])
        shared = overlapping(planes) if src.classes.exclusive else []
        if shared:
            names = " and ".join(src.classes.names[k] for k in shared)
            report.add(train[item_id], f"classes {names} overlap in an exclusive task")
        masks[item_id] = pack(planes)
    return masks

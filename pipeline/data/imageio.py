"""Reading and checking ingest inputs: image and mask files, id CSVs.

Nothing here writes. Images come back as uint8 in RGB order, alpha dropped,
and collapsed to 2-D when gray (including RGB with identical channels, as in
TGS), so the channel policy can be decided once every file has been seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core import progress
from pipeline.core.fileio import read_csv
from pipeline.data.imagehead import DEFAULT_MAX_PIXELS, integrity_problem, size_problem

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class Report:
    """Collects problem lines that name files relative to the dataset root."""

    def __init__(self, paths: Iterable[Path | None]) -> None:
        parents = [str(Path(p).absolute().parent) for p in paths if p is not None]
        self.root = Path(os.path.commonpath(parents)) if parents else Path.cwd()
        self.problems: list[str] = []

    def name(self, path: Path, folder: bool = False) -> str:
        """``images/abc.png`` rather than an absolute path."""
        try:
            text = Path(path).absolute().relative_to(self.root).as_posix()
        except ValueError:
            text = str(path)
        return f"{text}/" if folder else text

    def add(self, where: Path | str, message: str) -> None:
        """Record ``<file>: <message>``."""
        name = where if isinstance(where, str) else self.name(where)
        self.problems.append(f"{name}: {message}")


@dataclass
class Loaded:
    """Outcome of reading one file: an array or a problem, never both."""

    array: np.ndarray | None = None
    bits: int = 8
    problem: str | None = None


def _utf8(name: str) -> bool:
    # os.scandir hands back undecodable bytes as lone surrogates; such an id could not be
    # written to train.csv or printed, so the file is reported instead.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def list_images(folder: Path, not_utf8: list[Path] | None = None) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Supported files in ``folder`` by id (stem); also ids with several files.

    Ids seen twice still map to one path so pairing checks keep working and
    the duplicate is reported once, not as a cascade of follow-up problems.
    Files whose name is not valid UTF-8 are left out (appended to ``not_utf8``).
    """
    found: dict[str, list[Path]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() not in IMAGE_EXTS or not entry.is_file():
                continue
            if _utf8(entry.name):
                found.setdefault(stem, []).append(Path(entry.path))
            elif not_utf8 is not None:
                not_utf8.append(Path(entry.path))
    paths = {k: min(v) for k, v in sorted(found.items())}
    dups = {k: sorted(v) for k, v in sorted(found.items()) if len(v) > 1}
    return paths, dups


def decode_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Loaded:
    """Read and decode ``path`` unchanged (bit depth, channels as stored); refuse, before
    decoding, a header that declares more than ``max_pixels`` pixels."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        return Loaded(problem=f"cannot read ({err.strerror})")
    problem = integrity_problem(raw) or size_problem(raw, max_pixels)
    if problem:
        return Loaded(problem=problem)
    try:
        array = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # e.g. OpenCV's own pixel limit; its message spans lines
        return Loaded(problem=f"cannot decode (OpenCV error in {err.func}: {' '.join(str(err.err).split())})")
    if array is None or array.size == 0:
        return Loaded(problem="cannot decode as an image")
    if array.dtype not in (np.uint8, np.uint16):
        return Loaded(problem=f"unsupported pixel type {array.dtype}")
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        return Loaded(problem=f"unsupported channel count {array.shape[2]}")
    return Loaded(array=array, bits=8 * array.dtype.itemsize)


def _color_or_gray(array: np.ndarray) -> np.ndarray:
    """2-D if gray-equivalent, else HxWx3 in OpenCV's BGR order; alpha dropped."""
    if array.ndim == 2:
        return array
    if array.shape[2] == 1:
        return array[:, :, 0]
    bgr = array[:, :, :3]
    b, g, r = bgr[:, :, 0], bgr[:, :, 1], bgr[:, :, 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return np.ascontiguousarray(b)
    return bgr


def to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit -> 8-bit with the image's own min/max.

    A fixed /257 would squash 12-bit sensor data stored in 16-bit containers
    into ~16 gray levels; per-image stretching keeps its contrast. A constant
    image maps to zeros.
    """
    if array.dtype == np.uint8:
        return array
    lo, hi = int(array.min()), int(array.max())
    if hi == lo:
        return np.zeros(array.shape, np.uint8)
    scaled = (array.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5
    return scaled.astype(np.uint8)


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Loaded:
    """Decode an image to uint8, 2-D if gray else HxWx3 RGB."""
    loaded = decode_file(path, max_pixels)
    if loaded.array is None:
        return loaded
    array = to_uint8(_color_or_gray(loaded.array))
    if array.ndim == 3:
        array = np.ascontiguousarray(array[:, :, ::-1])  # BGR -> RGB
    return Loaded(array=array, bits=loaded.bits)


def _value_sample(mask: np.ndarray) -> str:
    values = np.unique(mask)
    # Show both ends: a full 0..255 ramp should not read as "0, 1, 2".
    shown = values if len(values) <= 3 else np.r_[values[:2], values[-1:]]
    listed = ", ".join(str(int(v)) for v in shown)
    return f"non-binary values: e.g. {listed} ({len(values)} distinct)"


def load_mask(path: Path, threshold: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS) -> Loaded:
    """Decode a mask to 0/1 uint8 HxW (foreground = value > threshold).

    With the default threshold 0 a mask must hold {0, M} for a single M > 0
    (1, 255, 65535 ...); a positive threshold is an explicit request to
    binarise soft or anti-aliased masks, so the value check is skipped.
    """
    loaded = decode_file(path, max_pixels)
    if loaded.array is None:
        return loaded
    mask = _color_or_gray(loaded.array)
    if mask.ndim == 3:
        return Loaded(problem="color mask with differing channels")
    if threshold == 0:
        top = mask.max()
        if not np.all((mask == 0) | (mask == top)):
            return Loaded(problem=_value_sample(mask))
    return Loaded(array=(mask > threshold).view(np.uint8), bits=loaded.bits)


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[0]}x{array.shape[1]}"


def list_folder(report: Report, folder: Path | None) -> dict[str, Path]:
    """Image files of an optional folder by id; reports missing/empty/duplicates."""
    if folder is None:
        return {}
    label = report.name(folder, folder=True)
    if not folder.is_dir():
        report.add(label, "not a folder" if folder.exists() else "folder missing")
        return {}
    not_utf8: list[Path] = []
    paths, dups = list_images(folder, not_utf8)
    for path in sorted(not_utf8):
        report.add(f"{label}{os.fsencode(path.name)!r}", "file name is not valid UTF-8")
    for stem, files in dups.items():
        names = ", ".join(report.name(f) for f in files)
        report.add(names, f"duplicate id {stem} ({len(files)} files, same stem)")
    if not paths and not not_utf8:
        report.add(label, f"no images ({' '.join(IMAGE_EXTS)})")
    return paths


def decode_all(
    report: Report,
    pool: Executor,
    paths: dict[str, Path],
    loader: Callable[[Path], Loaded],
) -> dict[str, Loaded]:
    """Decode every path on ``pool``; report failures, return the successes."""
    results = dict(zip(paths, progress.bar(pool.map(loader, paths.values()), "decode", len(paths)), strict=True))
    for item_id, loaded in results.items():
        if loaded.problem:
            report.add(paths[item_id], loaded.problem)
    return {i: r for i, r in results.items() if r.array is not None}


def pair_masks(
    report: Report,
    pool: Executor,
    images: dict[str, Path],
    decoded: dict[str, np.ndarray],
    folder: Path,
    threshold: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    loader: Callable[[Path], Loaded] | None = None,
) -> dict[str, np.ndarray]:
    """Decode the mask of every image (binary masks, or with `loader`); report missing,
    orphan, mis-sized masks."""
    masks = list_folder(report, folder)
    if not masks:  # folder problem already reported; skip a line per image
        return {}
    for item_id in sorted(images.keys() - masks.keys()):
        report.add(images[item_id], f"no mask in {report.name(folder, folder=True)}")
    for item_id in sorted(masks.keys() - images.keys()):
        report.add(masks[item_id], "mask has no image (orphan)")
    both = {i: masks[i] for i in images if i in masks}
    loader = loader or partial(load_mask, threshold=threshold, max_pixels=max_pixels)
    result: dict[str, np.ndarray] = {}
    for item_id, loaded in decode_all(report, pool, both, loader).items():
        image = decoded.get(item_id)
        if image is None:
            continue  # unreadable image already reported
        if loaded.array.shape != image.shape[:2]:
            sizes = f"{_hw(loaded.array)} differs from image {_hw(image)}"
            report.add(both[item_id], f"size {sizes} (HxW)")
        else:
            result[item_id] = loaded.array
    return result


def with_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Gray (2-D) or RGB uint8 -> HxW (channels=1) or HxWx3 (channels=3)."""
    if array.ndim == 2:
        return array if channels == 1 else np.repeat(array[:, :, None], 3, axis=2)
    if channels == 3:
        return array
    # ITU-R 601 luma; only reached when channels=1 is forced on color data.
    gray = array @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(gray + 0.5, 0, 255).astype(np.uint8)


def read_id_csv(report: Report, path: Path, columns: list[str], text: bool) -> pd.DataFrame | None:
    """Read a CSV whose first listed column is the id; None if unusable."""
    if not path.is_file():
        report.add(path, "file missing")
        return None
    try:
        # Ids like "0012" or "NA" must stay strings; text=True keeps RLE as text too.
        df = read_csv(path, dtype=str if text else {columns[0]: str})
    except (OSError, ValueError) as err:
        report.add(path, f"cannot read CSV ({err})")
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        report.add(
            path,
            f"no column {', '.join(missing)} (has {', '.join(map(str, df.columns))})",
        )
        return None
    df[columns[0]] = df[columns[0]].fillna("").astype(str)
    return df


def report_duplicates(report: Report, path: Path, ids: pd.Series) -> None:
    """One line per id listed more than once."""
    counts = ids.value_counts()
    for item_id, n in counts[counts > 1].sort_index().items():
        report.add(path, f"duplicate id {item_id} ({n} rows)")

"""Validate a segmentation dataset, then cache it as memmapped stores.

``validate`` checks everything (folders, files, pairing, masks, RLE, ids,
metadata) and writes nothing. ``ingest`` writes only when there are zero
problems and reuses the arrays ``validate`` decoded, so every file is decoded
once whether callers run ``validate`` then ``ingest`` or ``ingest`` alone.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.fileio import write_csv, write_text
from pipeline.core.store import write_store
from pipeline.data.imageio import (
    Report,
    decode_all,
    list_folder,
    load_image,
    pair_masks,
    read_id_csv,
    report_duplicates,
    with_channels,
)
from pipeline.data.longrle import image_ids, read_masks, sample_keys
from pipeline.data.metadata import join_metadata, read_metadata
from pipeline.data.multiclass import Classes, MaskSource, pack, read_folders, unpack
from pipeline.data.rle import rle_decode, validate_rle
from pipeline.data.sources import IngestError, Sources


@dataclass
class Scan:
    """A dataset decoded and checked: train images and masks, test images, metadata."""

    problems: list[str]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    tests: dict[str, np.ndarray] = field(default_factory=dict)
    test_order: list[str] = field(default_factory=list)
    metadata: pd.DataFrame | None = None
    bits: Counter = field(default_factory=Counter)


def _rle_masks(report: Report, src: Sources, train: dict[str, Path], images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    path = src.train_rle_csv
    df = read_id_csv(report, path, [src.id_column, src.rle_column], text=True)
    if df is None:
        return {}
    report_duplicates(report, path, df[src.id_column])
    masks: dict[str, np.ndarray] = {}
    rows = zip(df[src.id_column], df[src.rle_column].fillna(""), strict=True)
    for line, (item_id, rle) in enumerate(rows, start=2):  # line 1 is the header
        if item_id not in train:
            report.add(path, f"line {line}: id {item_id} has no image")
        elif item_id in images and item_id not in masks:
            shape = images[item_id].shape[:2]
            error = validate_rle(rle, shape)
            if error:
                report.add(path, f"line {line}: id {item_id}: malformed RLE: {error}")
            else:
                masks[item_id] = rle_decode(rle, shape)
    for item_id in sorted(train.keys() - set(df[src.id_column])):
        report.add(train[item_id], f"no row in {report.name(path)}")
    return masks


def _submission_order(report: Report, src: Sources, test: dict[str, Path]) -> list[str]:
    path = src.sample_submission
    if path is None:
        return sorted(test)
    if src.test_images is None:
        report.add(path, "given without test_images")
        return []
    classes = src.multiclass()
    if classes is not None:  # a long-format sample: a row per image and class
        found = sample_keys(report, path, classes)
        if found is None or not test:
            return sorted(test)
        keys = found[1]
        order = [i if i is not None else k for k, i in zip(keys, image_ids(keys, test), strict=True)]
    else:
        df = read_id_csv(report, path, [src.id_column], text=True)
        if df is None or not test:  # problem already reported; avoid a line per id
            return sorted(test)
        report_duplicates(report, path, df[src.id_column])
        order = list(dict.fromkeys(df[src.id_column]))
    for item_id in order:
        if item_id not in test:
            report.add(path, f"id {item_id} has no test image")
    listed = set(order)
    for item_id, image in test.items():
        if item_id not in listed:
            report.add(image, f"id not in {report.name(path)}")
    return [i for i in order if i in test]


def _scan(src: Sources) -> Scan:
    report = Report(src.paths())
    scan = Scan(report.problems)
    if src.channels not in ("auto", 1, 3):
        report.add("channels", f"must be 'auto', 1 or 3, got {src.channels!r}")
    if src.train_images is None and src.test_images is None:
        report.add("sources", "no train_images and no test_images")
    # cv2 releases the GIL while decoding, so threads scale without pickling.
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        load = partial(load_image, max_pixels=src.max_pixels)
        train = list_folder(report, src.train_images)
        loaded = decode_all(report, pool, train, load)
        scan.images = {i: r.array for i, r in loaded.items()}
        scan.bits.update(r.bits for r in loaded.values())
        if src.train_images is not None:
            scan.masks = _masks(report, pool, src, train, scan.images)
        test = list_folder(report, src.test_images)
        loaded = decode_all(report, pool, test, load)
    scan.tests = {i: r.array for i, r in loaded.items()}
    scan.bits.update(r.bits for r in loaded.values())
    for item_id in sorted(train.keys() & test.keys()):
        report.add(test[item_id], f"id {item_id} is also a train image")
    scan.test_order = _submission_order(report, src, test)
    scan.metadata = read_metadata(report, src.metadata_csv, src.id_column, {**train, **test})
    return scan


def _masks(
    report: Report,
    pool: Executor,
    src: Sources,
    train: dict[str, Path],
    images: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    classes = src.multiclass()
    if src.train_masks is not None and src.train_rle_csv is not None:
        report.add("sources", "give train_masks or train_rle_csv, not both")
    elif src.train_masks is None and src.train_rle_csv is None:
        report.add("sources", "no train masks: give train_masks or train_rle_csv")
    elif classes is not None:
        return _class_masks(report, pool, src, classes, train, images)
    elif src.train_masks is not None:
        return _inverted(src, pair_masks(report, pool, train, images, src.train_masks, src.mask_threshold, src.max_pixels))
    else:
        return _inverted(src, _rle_masks(report, src, train, images))
    return {}


def _inverted(src: Sources, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # A mask whose foreground is drawn as 0 (EM membranes): the task's foreground is the rest.
    return {i: (m == 0).astype(m.dtype) for i, m in masks.items()} if src.mask_invert else masks


def _class_masks(report: Report, pool: Executor, src: Sources, classes: Classes, train: dict, images: dict) -> dict[str, np.ndarray]:
    if problem := classes.problem():
        report.add("classes", problem)
        return {}
    if src.train_rle_csv is not None:
        shapes = {i: a.shape[:2] for i, a in images.items()}
        found = read_masks(report, src.train_rle_csv, classes, shapes, known=set(train))
        return {i: pack(planes) for i, planes in found.items()}
    where = MaskSource(src.train_masks, classes, src.mask_threshold, src.max_pixels)
    return read_folders(report, pool, where, train, images)


# One slot: validate() then ingest() on unchanged files reuses the decoded
# arrays. Only clean scans are kept; a failed one leads to edited files anyway.
_last: tuple[tuple, Scan] | None = None


def _fingerprint(src: Sources) -> tuple:
    entries = []
    for path in src.paths():
        if path.is_dir():
            with os.scandir(path) as it:
                entries += sorted((e.path, e.stat().st_size, e.stat().st_mtime_ns) for e in it)
        elif path.is_file():
            entries.append((str(path), path.stat().st_size, path.stat().st_mtime_ns))
    return repr(src), tuple(entries)


def validate(src: Sources) -> list[str]:
    """Problem lines, one per problem, each naming its file; writes nothing."""
    global _last
    scan = _scan(src)
    _last = None if scan.problems else (_fingerprint(src), scan)
    return list(scan.problems)


def scan_dataset(src: Sources) -> Scan:
    """Every file decoded and checked, nothing written; IngestError (one line per problem) if any."""
    scan = _scan(src)
    if scan.problems:
        raise IngestError(scan.problems)
    return scan


def _take_scan(src: Sources) -> Scan:
    global _last
    cached, _last = _last, None
    if cached is not None and cached[0] == _fingerprint(src):
        return cached[1]
    return _scan(src)


def ingest(src: Sources, out: Path) -> dict:
    """Validate, then write stores, train.csv / test.csv and stats.json into ``out``.

    Raises IngestError, having written nothing, if there is any problem.
    """
    scan = _take_scan(src)
    if scan.problems:
        raise IngestError(scan.problems)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = [*scan.images.values(), *scan.tests.values()]
    channels = int(src.channels) if src.channels != "auto" else _auto_channels(arrays)
    stats: dict = {
        "channels": channels,
        "bit_depths": {str(k): v for k, v in sorted(scan.bits.items())},
    }
    if scan.images:
        stats["mask_source"] = "masks" if src.train_masks else "rle"
        stats["train"] = _write_train(scan, out, channels, src.multiclass())
    if scan.tests:
        stats["test"] = _write_test(scan, out, channels)
    if scan.metadata is not None:
        stats["metadata_columns"] = [str(c) for c in scan.metadata.columns if c != "id"]
    # Written last: its presence marks a complete ingest.
    write_text(out / "stats.json", json.dumps(stats, indent=2) + "\n")
    return stats


def _auto_channels(arrays: list[np.ndarray]) -> int:
    # load_image already collapsed gray and identical-channel RGB to 2-D.
    return 1 if all(a.ndim == 2 for a in arrays) else 3


def _table(ids: list[str], arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    shapes = np.array([arrays[i].shape[:2] for i in ids], np.int64).reshape(-1, 2)
    return pd.DataFrame({"id": ids, "height": shapes[:, 0], "width": shapes[:, 1]})


def _write_train(scan: Scan, out: Path, channels: int, classes: Classes | None) -> dict:
    ids = sorted(scan.images)
    write_store(out, "images", ((i, with_channels(scan.images[i], channels)) for i in ids))
    write_store(out, "masks", ((i, scan.masks[i]) for i in ids))
    table = _table(ids, scan.images)
    # coverage and empty: any class; a K-class task adds each class's coverage.
    table["coverage"] = [float((scan.masks[i] > 0).mean()) for i in ids]
    table["empty"] = table["coverage"] == 0
    if classes is not None:
        per_class = np.array([unpack(scan.masks[i], len(classes)).mean(axis=(1, 2)) for i in ids]).reshape(-1, len(classes))
        for k, name in enumerate(classes.names):
            table[f"coverage_{name}"] = per_class[:, k]
    write_csv(out / "train.csv", join_metadata(table, scan.metadata))
    stats = {"count": len(ids), **_coverage_stats(table["coverage"]), "sizes": _size_summary(table)}
    if classes is not None:
        stats["classes"] = {name: _coverage_stats(table[f"coverage_{name}"]) for name in classes.names}
    return stats


def _coverage_stats(coverage: pd.Series) -> dict:
    empty = coverage == 0
    filled = coverage[~empty]
    return {
        "empty": int(empty.sum()),
        "empty_share": float(empty.mean()),
        "mean_coverage_nonempty": float(filled.mean()) if len(filled) else 0.0,
    }


def _write_test(scan: Scan, out: Path, channels: int) -> dict:
    ids = scan.test_order
    write_store(out, "test_images", ((i, with_channels(scan.tests[i], channels)) for i in ids))
    table = _table(ids, scan.tests)
    write_csv(out / "test.csv", join_metadata(table, scan.metadata))
    return {"count": len(ids), "sizes": _size_summary(table)}


def _size_summary(table: pd.DataFrame) -> dict:
    """Distinct (height, width) pairs, the most common ones, and the ranges."""
    counts = Counter(zip(table["height"].tolist(), table["width"].tolist(), strict=True))
    common = [{"height": h, "width": w, "count": n} for (h, w), n in counts.most_common(5)]
    summary: dict = {"distinct": len(counts), "most_common": common}
    for key in ("height", "width"):
        values = table[key]
        summary[key] = {
            "min": int(values.min()),
            "median": float(values.median()),
            "max": int(values.max()),
        }
    return summary

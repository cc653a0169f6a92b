"""Deterministic synthetic K-class demo dataset (issue 16): `python -m pipeline demo-data --classes 3`.

Each tile has a textured background and up to two defect regions, each class with its own
texture (oriented stripes, fine speckle, a smooth dark patch; more classes cycle through them
with another stripe period), so that a model must tell classes apart by texture, not by
brightness alone. About 45% of the tiles have no class, 35% one and 20% two. Classes are
exclusive (one class per pixel). Written:
- `train/images/`, `train/labels/` (label images: pixel value = class index, 0 = background)
  and `train_rle.csv` (the same masks in the steel layout: ImageId, ClassId, EncodedPixels);
- `test/images/` (a mild gain/offset shift, as in the binary demo) and
  `sample_submission.csv` (Image_Label, EncodedPixels: every test image x class);
- `test_solution/solution.csv` (steel layout), `classes.txt`, `stats.json`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from pipeline.core.fileio import read_json, temp_path
from pipeline.core.folders import check_replaceable, remove_stale, swap_in
from pipeline.data.longrle import CLASS_ROWS, IMAGE_LABEL, encode, to_frame
from pipeline.data.multiclass import Classes
from pipeline.demo.common import TEST_GAIN, TEST_OFFSET, bandpass, is_demo, make_ids, smooth_noise, to_u8, write_png

VERSION = "demo-multiclass-v1"
TEXTURES = ("stripes", "speckle", "dark")
PRESENT = (0.45, 0.35, 0.20)  # share of tiles with 0, 1 and 2 classes


def class_names(k: int) -> tuple[str, ...]:
    return tuple(TEXTURES[c % 3] + (str(c // 3 + 1) if c >= 3 else "") for c in range(k))


def _texture(rng: np.random.Generator, c: int, size: int) -> np.ndarray:
    """Class c's texture over a whole tile (unit-ish scale, added to the background)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    kind, j = c % 3, c // 3  # classes past the third: the same kinds at another scale or level
    if kind == 0:
        theta, period = rng.uniform(0, np.pi), 5.0 + 3.0 * j
        return 1.1 * np.sin(2 * np.pi * (xs * np.cos(theta) + ys * np.sin(theta)) / period)
    if kind == 1:
        return 1.4 * bandpass(rng.standard_normal((size, size)).astype(np.float32), 0.5 * (1 + j), 1.4 * (1 + j))
    return (-0.9, 0.9, -0.45)[j] + 0.25 * smooth_noise(rng, size, size, 10)


def _region(rng: np.random.Generator, free: np.ndarray, size: int) -> np.ndarray:
    """A smooth blob inside the free pixels, covering 4-30% of the tile."""
    field = smooth_noise(rng, size, size, rng.uniform(18, 40))
    field[~free] = -np.inf
    share = min(rng.uniform(0.04, 0.30), free.mean())
    return field > np.quantile(field[free], 1 - share / max(free.mean(), 1e-6)) if free.any() else free


def _tile(rng: np.random.Generator, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One float image and its label map (0 = background, c + 1 = class c)."""
    img = 0.8 * smooth_noise(rng, size, size, 14) + 0.4 * smooth_noise(rng, size, size, 40)
    label = np.zeros((size, size), np.uint8)
    n = rng.choice(3, p=PRESENT)
    for c in rng.choice(k, size=min(n, k), replace=False):
        region = _region(rng, label == 0, size)
        label[region] = c + 1
        alpha = region.astype(np.float32)
        img = (1 - alpha) * img + alpha * (0.35 * img + _texture(rng, int(c), size))
    img += 0.35 * rng.standard_normal((size, size)).astype(np.float32)
    return img, label


def _planes(label: np.ndarray, k: int) -> np.ndarray:
    return np.stack([label == c + 1 for c in range(k)]).astype(np.uint8)


def _build(tmp: Path, k: int, seed: int, n_train: int, n_test: int, size: int) -> dict:
    rng = np.random.default_rng(seed)
    names = class_names(k)
    ids = make_ids(rng, n_train + n_test)
    splits = {"train": ids[:n_train], "test": ids[n_train:]}
    planes: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    for split, split_ids in splits.items():
        for item_id in split_ids:
            img, label = _tile(rng, k, size)
            gain, offset = (TEST_GAIN, TEST_OFFSET) if split == "test" else (1.0, 0.0)
            write_png(tmp / split / "images" / f"{item_id}.png", to_u8(img, gain, offset))
            if split == "train":
                write_png(tmp / "train" / "labels" / f"{item_id}.png", label)
            planes[split][item_id] = _planes(label, k)
    classes = Classes(names, exclusive=True)
    train_rows = to_frame(CLASS_ROWS, encode(planes["train"]), splits["train"], classes)
    train_rows[train_rows["EncodedPixels"] != ""].to_csv(tmp / "train_rle.csv", index=False)
    (tmp / "test_solution").mkdir()
    to_frame(CLASS_ROWS, encode(planes["test"]), splits["test"], classes).to_csv(tmp / "test_solution" / "solution.csv", index=False)
    to_frame(IMAGE_LABEL, {}, splits["test"], classes).to_csv(tmp / "sample_submission.csv", index=False)
    (tmp / "classes.txt").write_text("\n".join(names) + "\n")
    stats = {"version": VERSION, "seed": seed, "classes": list(names), "n_train": n_train, "n_test": n_test, "tile": size}
    for split, masks in planes.items():
        present = np.array([m.any(axis=(1, 2)) for m in masks.values()])
        stats[f"{split}_empty_share"] = round(float((present.sum(axis=1) == 0).mean()), 4)
        stats[f"{split}_images_per_class"] = dict(zip(names, present.sum(axis=0).tolist(), strict=True))
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def generate(out_dir: Path, k: int = 3, seed: int = 2018, n_train: int = 800, n_test: int = 300, size: int = 96) -> dict:
    """Write the K-class demo into out_dir (atomically, as `demo.generate`); return its stats."""
    out_dir = Path(os.path.abspath(out_dir))
    want = {"version": VERSION, "seed": seed, "classes": list(class_names(k)), "n_train": n_train, "n_test": n_test, "tile": size}
    stats = read_json(out_dir / "stats.json")
    if isinstance(stats, dict) and all(stats.get(key) == v for key, v in want.items()):
        return stats
    check_replaceable(out_dir, is_demo, "demo dataset (no stats.json with a demo version)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir)
    tmp = temp_path(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stats = _build(tmp, k, seed, n_train, n_test, size)
        swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats


def summary(out: Path, s: dict) -> str:
    per_class = ", ".join(f"{c} {n}" for c, n in s["train_images_per_class"].items())
    return f"demo data in {out}: {len(s['classes'])} classes, train={s['n_train']} (no class {s['train_empty_share']:.1%}; {per_class}) test={s['n_test']}"

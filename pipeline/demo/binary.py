"""Deterministic synthetic TGS-Salt-like demo dataset.

Large grayscale "sections" with warped, layered seismic-like texture hold
smooth irregular salt bodies whose texture is weaker and more chaotic than the
surrounding layering, with only a small mean shift. Sections are cut into
non-overlapping tiles on a grid, so neighbouring tiles share edges.

Split policy: train and test tiles come from the *same* sections and are
assigned at random (like TGS), so a tile's grid neighbours may fall in the
other split. Test images get a mild global gain/offset shift, which
AdaBN / test-time normalisation should undo.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.fileio import temp_path
from pipeline.core.folders import check_replaceable, remove_stale, swap_in
from pipeline.demo.common import TEST_GAIN, TEST_OFFSET, bandpass, is_demo, make_ids, smooth_noise, to_u8, write_png

VERSION = "demo-v2"
GRID_ROWS, GRID_COLS = 16, 20  # tiles per section: 1616 x 2020 px at tile=101
OVERSAMPLE = 1.5  # cut more tiles than needed so empty share can be chosen
EMPTY_SHARE = 0.39  # TGS train had ~39% empty masks
FT_PER_PX = 0.35  # "depth" units per section pixel
SALT_MEAN = 0.15  # salt mean shift, in units of background texture std


def _layering(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Horizontal-ish reflectors: a 1-D reflectivity trace sampled along a warped depth."""
    margin = 200
    n = h + 2 * margin
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dip = np.float32(rng.uniform(-0.08, 0.08))
    warp = 45 * smooth_noise(rng, h, w, 420) + 10 * smooth_noise(rng, h, w, 110)
    depth = ys + margin + warp + dip * (xs - w / 2)
    # Two reflector families with different periods, mixed laterally.
    mix = 1 / (1 + np.exp(-1.5 * smooth_noise(rng, h, w, 300)))
    out = np.zeros((h, w), np.float32)
    for weight, (s1, s2) in ((mix, (1.2, 3.5)), (1 - mix, (2.5, 7.0))):
        spikes = rng.standard_normal(n) * (rng.random(n) < 0.35)
        trace = bandpass(spikes.astype(np.float32).reshape(-1, 1), s1, s2).ravel()
        out += weight * np.interp(depth.ravel(), np.arange(n), trace).reshape(h, w).astype(np.float32)
    return out / (out.std() + 1e-6)


def _salt_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Salt bodies: thresholded multi-scale noise, more salt deeper in the section."""
    field = smooth_noise(rng, h, w, 380) + 0.5 * smooth_noise(rng, h, w, 130)
    field += 0.12 * smooth_noise(rng, h, w, 22)  # irregular boundary detail
    field += rng.uniform(0.3, 1.0) * (np.linspace(-1, 1, h, dtype=np.float32)[:, None])
    frac = rng.uniform(0.18, 0.4)
    return field > np.quantile(field, 1 - frac)


def _section(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One section: float image (~unit std) and boolean salt mask."""
    mask = _salt_mask(rng, h, w)
    amp = np.exp(0.3 * smooth_noise(rng, h, w, 220))
    layers = _layering(rng, h, w)
    chaotic = bandpass(rng.standard_normal((h, w)).astype(np.float32), 1.3, 4.0)
    background = amp * layers
    salt = amp * (0.6 * layers + 0.45 * chaotic) + SALT_MEAN
    # Soft blend so the body edge itself is not a trivially visible step.
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.0)
    img = (1 - alpha) * background + alpha * salt
    # Slow brightness drift, so no global intensity threshold separates salt.
    img += 0.45 * smooth_noise(rng, h, w, 260)
    img += 0.5 * rng.standard_normal((h, w)).astype(np.float32)
    return img, mask


def rle_encode(mask: np.ndarray) -> str:
    """Kaggle RLE: 1-indexed, column-major runs 'start length ...'; '' for empty."""
    try:
        from pipeline.data.rle import rle_encode as shared
    except ImportError:
        flat = np.concatenate([[0], (np.asarray(mask).ravel(order="F") > 0).astype(np.int8), [0]])
        runs = np.flatnonzero(flat[1:] != flat[:-1]) + 1
        runs[1::2] -= runs[::2]
        return " ".join(map(str, runs))
    return shared(mask)


def _take(pool: list[int], k: int, spare: list[int]) -> list[int]:
    """Pop k items from pool, topping up from spare if pool runs dry."""
    got = [pool.pop() for _ in range(min(k, len(pool)))]
    got += [spare.pop() for _ in range(min(k - len(got), len(spare)))]
    return got


def _select(rng: np.random.Generator, empty: np.ndarray, n_train: int, n_test: int) -> dict[str, list[int]]:
    """Pick tile indices for each split, stratified to hit EMPTY_SHARE."""
    order = rng.permutation(len(empty))
    empties = [int(i) for i in order if empty[i]]
    fulls = [int(i) for i in order if not empty[i]]
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        n_empty = round(EMPTY_SHARE * n)
        out[split] = _take(empties, n_empty, fulls) + _take(fulls, n - n_empty, empties)
    return out


def _cut_sections(rng: np.random.Generator, n: int, tile: int) -> tuple[list, list]:
    """Render n sections; return (uint8 image, mask) pairs and per-tile records."""
    h, w = GRID_ROWS * tile, GRID_COLS * tile
    sections, tiles = [], []
    for s in range(n):
        img, mask = _section(rng, h, w)
        # Per-section contrast/brightness, like differently processed surveys.
        sections.append((to_u8(img, rng.uniform(0.75, 1.25), rng.uniform(-10, 10)), mask))
        top = float(rng.uniform(50, 300))
        for r in range(GRID_ROWS):
            for c in range(GRID_COLS):
                empty = not mask[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile].any()
                tiles.append({"section": s, "row": r, "col": c, "top": top, "empty": empty})
    return sections, tiles


def _write_split(
    tmp: Path,
    split: str,
    tiles: list[dict],
    sections: list,
    ids: list[str],
    rng: np.random.Generator,
    tile: int,
) -> list[dict]:
    """Write one split's images and masks; return its table rows."""
    masks_dir = "train/masks" if split == "train" else "test_solution/masks"
    rows = []
    for t, tid in zip(tiles, ids, strict=True):
        y, x = t["row"] * tile, t["col"] * tile
        u8, mask = sections[t["section"]]
        img = u8[y : y + tile, x : x + tile]
        if split == "test":
            img = np.clip(np.rint(TEST_GAIN * img + TEST_OFFSET), 0, 255)
        m = mask[y : y + tile, x : x + tile].astype(np.uint8) * 255
        write_png(tmp / split / "images" / f"{tid}.png", img.astype(np.uint8))
        write_png(tmp / masks_dir / f"{tid}.png", m)
        z = round(t["top"] + (y + tile / 2) * FT_PER_PX + rng.normal(0, 3))
        rows.append(
            {"id": tid, "split": split, "section": t["section"], "row": t["row"], "col": t["col"], "y": y, "x": x, "z": z}
            | {"rle_mask": rle_encode(m), "coverage": float((m > 0).mean())}
        )
    return rows


def _split_stats(split: str, coverage: list[float]) -> dict:
    cov = np.array(coverage)
    full = cov[cov > 0]
    return {
        f"n_{split}": len(cov),
        f"{split}_empty_share": round(float((cov == 0).mean()), 4) if len(cov) else 0.0,
        f"{split}_mean_coverage_nonempty": round(float(full.mean()), 4) if len(full) else 0.0,
    }


def _build(tmp: Path, seed: int, n_train: int, n_test: int, tile: int) -> dict:
    """Generate the whole dataset into tmp; return stats."""
    rng = np.random.default_rng(seed)
    total = n_train + n_test
    n_sections = max(1, int(np.ceil(total * OVERSAMPLE / (GRID_ROWS * GRID_COLS))))
    sections, tiles = _cut_sections(rng, n_sections, tile)
    chosen = _select(rng, np.array([t["empty"] for t in tiles]), n_train, n_test)
    ids = make_ids(rng, total)
    split_ids = {
        "train": ids[: len(chosen["train"])],
        "test": ids[len(chosen["train"]) :],
    }
    stats: dict = {"version": VERSION, "seed": seed, "tile": tile}
    rows = []
    for split, idx in chosen.items():
        picked = [tiles[i] for i in idx]
        rows += _write_split(tmp, split, picked, sections, split_ids[split], rng, tile)
        stats.update(_split_stats(split, [r["coverage"] for r in rows if r["split"] == split]))
    df = pd.DataFrame(rows).sort_values(["split", "id"], ascending=[False, True])
    _write_tables(tmp, df)
    stats.update(
        n_sections=n_sections,
        section_shape=[GRID_ROWS * tile, GRID_COLS * tile],
        split_policy="same sections, tiles assigned to train/test at random",
        test_shift={"gain": TEST_GAIN, "offset": TEST_OFFSET},
    )
    (tmp / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats


def _write_tables(tmp: Path, df: pd.DataFrame) -> None:
    df[["id", "z"]].to_csv(tmp / "metadata.csv", index=False)
    pos = ["id", "split", "section", "row", "col", "y", "x"]
    df[pos].to_csv(tmp / "tile_positions.csv", index=False)
    sol = df.loc[df.split == "test", ["id", "rle_mask"]]
    (tmp / "test_solution").mkdir(parents=True, exist_ok=True)
    sol.to_csv(tmp / "test_solution" / "solution.csv", index=False)


def _cached_stats(out_dir: Path, seed: int, n_train: int, n_test: int, tile: int) -> dict | None:
    try:
        stats = json.loads((out_dir / "stats.json").read_text())
    except (OSError, ValueError):
        return None
    want = {
        "version": VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_test": n_test,
        "tile": tile,
    }
    return stats if all(stats.get(k) == v for k, v in want.items()) else None


def generate(
    out_dir: Path,
    seed: int = 2018,
    n_train: int = 1200,
    n_test: int = 400,
    tile: int = 101,
) -> dict:
    """Write the demo dataset into out_dir (atomically); return its stats.

    Reuses an existing out_dir whose stats.json matches seed, version and sizes, replaces
    one holding another demo dataset, and refuses any other non-empty folder (UserError).
    """
    # abspath, not resolve: normalises `.` and `..` (which have no name to put a temp
    # sibling beside) without following a symlinked target.
    out_dir = Path(os.path.abspath(out_dir))
    cached = _cached_stats(out_dir, seed, n_train, n_test, tile)
    if cached is not None:
        return cached
    check_replaceable(out_dir, is_demo, "demo dataset (no stats.json with a demo version)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir)
    tmp = temp_path(out_dir)  # unique per process: two runs never share one
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stats = _build(tmp, seed, n_train, n_test, tile)
        swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return stats

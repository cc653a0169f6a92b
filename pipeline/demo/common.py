"""What both synthetic demos draw with: smooth noise, band-pass texture, 8-bit conversion,
random ids, PNG writing, the test set's intensity shift, and how a demo folder is recognised."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.core.fileio import read_json

TEST_GAIN, TEST_OFFSET = 0.87, 20.0  # contrast -13%, brightness +~3 levels


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean unit-std noise with feature size ~scale px (cheap: upsampled lattice)."""
    lh, lw = int(h / scale) + 4, int(w / scale) + 4
    low = rng.standard_normal((lh, lw)).astype(np.float32)
    low = cv2.GaussianBlur(low, (0, 0), 0.6)
    big = cv2.resize(low, (int(lw * scale), int(lh * scale)), interpolation=cv2.INTER_CUBIC)
    oy = int(rng.integers(0, big.shape[0] - h + 1))
    ox = int(rng.integers(0, big.shape[1] - w + 1))
    out = big[oy : oy + h, ox : ox + w]
    return (out - out.mean()) / (out.std() + 1e-6)


def bandpass(x: np.ndarray, s1: float, s2: float) -> np.ndarray:
    """Difference of Gaussians, normalised to unit std."""
    out = cv2.GaussianBlur(x, (0, 0), s1) - cv2.GaussianBlur(x, (0, 0), s2)
    return (out - out.mean()) / (out.std() + 1e-6)


def to_u8(img: np.ndarray, gain: float, offset: float) -> np.ndarray:
    return np.clip(np.rint(128 + 36 * gain * img + offset), 0, 255).astype(np.uint8)


def make_ids(rng: np.random.Generator, n: int) -> list[str]:
    """n unique 10-char hex ids, unrelated to tile position."""
    raw = rng.integers(0, 16**10, size=2 * n + 16, dtype=np.int64)
    _, first = np.unique(raw, return_index=True)
    return [f"{v:010x}" for v in raw[np.sort(first)][:n]]


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")


def is_demo(folder: Path) -> bool:
    # An ingest artifact also has a stats.json: the version says who wrote it.
    stats = read_json(folder / "stats.json")
    return isinstance(stats, dict) and str(stats.get("version", "")).startswith("demo")

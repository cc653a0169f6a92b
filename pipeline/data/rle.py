"""Kaggle run-length encoding of binary masks.

Format: space-separated ``start length`` pairs, 1-indexed, over the pixels
numbered column-major (top to bottom, then left to right). The empty string
encodes an empty mask.
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["RLEError", "rle_decode", "rle_encode", "validate_rle"]

# Strict: int() would also accept "1_000" or " 7", which no Kaggle file contains.
_INT_TOKEN = re.compile(r"[+-]?\d+")
# Longer tokens are never parsed (int() refuses over 4300 digits): they only say "too big".
_MAX_DIGITS = 100


class RLEError(ValueError):
    """A run-length string that does not describe a valid mask of the given shape."""


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (nonzero = foreground) as a Kaggle RLE string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    pixels = mask.ravel(order="F") != 0
    # Zero padding guarantees every run has both a rising and a falling edge.
    padded = np.concatenate(([False], pixels, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    # Edge k marks pixel k + 1 (1-indexed) as the first one that differs.
    runs = edges + 1
    runs[1::2] -= runs[0::2]
    return " ".join(map(str, runs.tolist()))


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"shape must be (height, width), got {shape!r}")
    height, width = (int(s) for s in shape)
    if height < 1 or width < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    return height, width


def _is_missing(rle: object) -> bool:
    # pandas reads an empty CSV cell as NaN, so NaN means "no mask".
    return rle is None or (isinstance(rle, float) and math.isnan(rle))


def _clipped(token: str, limit: int) -> int:
    """int(token) clipped to [-limit, limit]; text too long for int() is past it anyway."""
    if len(token) > _MAX_DIGITS:
        return -limit if token.startswith("-") else limit
    return min(max(int(token), -limit), limit)


def _shown(token: str) -> str:
    """A token for a one-line message: as written, or its head and digit count if huge."""
    return token if len(token) <= _MAX_DIGITS else f"{token[:12]}...({len(token)} chars)"


def _run_end(start: str, length: str) -> str:
    """Last pixel of a run, for a message (the exact value, unless absurdly long)."""
    if max(len(start), len(length)) > _MAX_DIGITS:
        return f"{_shown(start)} + {_shown(length)} - 1"
    return str(int(start) + int(length) - 1)


def _parse_runs(rle: str | float | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Return validated 1-indexed (starts, lengths); raises RLEError."""
    height, width = _check_shape(shape)
    empty = np.zeros(0, dtype=np.int64)
    if _is_missing(rle):
        return empty, empty
    if not isinstance(rle, str):
        raise RLEError(f"expected a string, got {type(rle).__name__} {rle!r}")

    tokens = rle.split()
    if not tokens:
        return empty, empty
    for pos, tok in enumerate(tokens):
        if not _INT_TOKEN.fullmatch(tok):
            raise RLEError(f"non-integer token {_shown(tok)!r} at position {pos + 1}")
    if len(tokens) % 2:
        raise RLEError(f"odd number of values ({len(tokens)})")

    n_pixels = height * width
    # A token may not fit in int64 ("1 99999999999999999999"), two that fit may sum past it,
    # and int() refuses text over 4300 digits. Clipping to +-(n_pixels + 1) keeps every
    # comparison below true (a clipped value is < 1 or > n_pixels either way) and every sum
    # small; messages quote the tokens as written.
    limit = n_pixels + 1
    values = np.array([_clipped(tok, limit) for tok in tokens], dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    _check_runs(tokens, starts, lengths, (height, width))
    return starts, lengths


def _check_runs(tokens: list[str], starts: np.ndarray, lengths: np.ndarray, shape: tuple[int, int]) -> None:
    """Each run starts and lasts at least one pixel, ends inside the image, and the runs are
    sorted and apart; raises RLEError naming the first run that is not."""
    height, width = shape
    n_pixels = height * width
    # Run numbers in messages are 1-based, matching how people count pairs.
    bad = np.flatnonzero(starts < 1)
    if bad.size:
        i = bad[0]
        raise RLEError(f"run {i + 1} has start {_shown(tokens[2 * i])} < 1")
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        i = bad[0]
        raise RLEError(f"run {i + 1} has length {_shown(tokens[2 * i + 1])} < 1")
    last = starts + lengths - 1
    bad = np.flatnonzero(last > n_pixels)
    if bad.size:
        i = bad[0]
        end = _run_end(tokens[2 * i], tokens[2 * i + 1])
        raise RLEError(f"out of range: run {i + 1} ends at pixel {end} > {n_pixels} ({height}x{width})")
    bad = np.flatnonzero(starts[1:] < starts[:-1])
    if bad.size:
        i = bad[0]
        raise RLEError(f"unsorted runs: run {i + 2} starts at {starts[i + 1]} before run {i + 1} at {starts[i]}")
    # Touching runs (next start == previous end + 1) are legal, just not canonical.
    bad = np.flatnonzero(starts[1:] <= last[:-1])
    if bad.size:
        i = bad[0]
        raise RLEError(f"overlapping runs: run {i + 2} starts at {starts[i + 1]} <= end {last[i]} of run {i + 1}")


def rle_decode(rle: str | float | None, shape: tuple[int, int]) -> np.ndarray:
    """Decode a Kaggle RLE string into a uint8 0/1 mask of ``shape`` (height, width).

    NaN, None and "" decode to an all-zero mask. Malformed input raises RLEError.
    """
    height, width = _check_shape(shape)
    starts, lengths = _parse_runs(rle, shape)
    n_pixels = height * width
    # +1/-1 at run boundaries then cumsum paints every run in O(n) without a
    # per-run loop; runs are sorted and disjoint, so no index repeats within
    # either assignment.
    delta = np.zeros(n_pixels + 1, dtype=np.int8)
    delta[starts - 1] += 1
    delta[starts - 1 + lengths] -= 1
    flat = np.cumsum(delta[:-1], dtype=np.int8).astype(np.uint8)
    return np.ascontiguousarray(flat.reshape((height, width), order="F"))


def validate_rle(rle: str | float | None, shape: tuple[int, int]) -> str | None:
    """Return the RLEError message for ``rle`` at ``shape``, or None if it is valid."""
    try:
        _parse_runs(rle, shape)
    except RLEError as exc:
        return str(exc)
    return None

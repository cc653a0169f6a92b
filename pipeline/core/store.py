"""Flat memmapped store of variable-size uint8 arrays.

Decoding PNGs every epoch costs more than training a small net on 101x101
tiles, so ingest decodes once and later stages read views from one flat file.

Layout: ``<name>.u8`` holds the arrays back to back (C order, HxWxC);
``<name>.index.csv`` holds ``id, offset, height, width, channels``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import fileio

INDEX_COLUMNS = ["id", "offset", "height", "width", "channels"]


def store_files(folder: Path, name: str) -> tuple[Path, Path]:
    """The two files of store `name`: its bytes and its index."""
    folder = Path(folder)
    return folder / f"{name}.u8", folder / f"{name}.index.csv"


def _as_hwc(item_id: str, array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ValueError(f"{item_id}: store holds uint8, got {array.dtype}")
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"{item_id}: expected HxW or HxWxC, got {array.shape}")
    return array


def write_store(folder: Path, name: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
    """Write (id, uint8 HxW[xC]) items to ``folder/<name>.u8`` + index CSV.

    Both files go to temp names of this process first and are renamed at the end, index last,
    so a reader never sees an index pointing past the data it describes; an error leaves
    neither temp file behind.
    """
    data_path, index_path = store_files(folder, name)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, int, int, int, int]] = []
    seen: set[str] = set()
    offset = 0
    # Exited in reverse order: the data file is renamed first, the index last.
    with fileio.atomic_path(index_path) as tmp_index, fileio.atomic_path(data_path) as tmp_data:
        with open(tmp_data, "wb") as fh:
            for item_id, array in items:
                if item_id in seen:
                    raise ValueError(f"duplicate id {item_id!r} in store {name}")
                seen.add(item_id)
                hwc = np.ascontiguousarray(_as_hwc(item_id, array))
                fh.write(memoryview(hwc).cast("B"))
                rows.append((str(item_id), offset, *hwc.shape))
                offset += hwc.size
        pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(tmp_index, index=False)


class ArrayStore:
    """Read-only random access to a store written by :func:`write_store`.

    Items are HxWxC views into a read-only memmap; copy before writing.
    Pickling sends only the index, workers reopen the memmap on first access.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.data_path, self.index_path = store_files(folder, name)
        self.index = fileio.read_csv(self.index_path)
        self.ids: list[str] = self.index["id"].tolist()
        self._offsets = self.index["offset"].to_numpy(np.int64)
        self._hwc = self.index[["height", "width", "channels"]].to_numpy(np.int64)
        self._positions = {item_id: i for i, item_id in enumerate(self.ids)}
        self._data: np.ndarray | None = None
        self._check_size()

    def _check_size(self) -> None:
        # A short data file means a crashed write; fail here, not mid-epoch.
        ends = self._offsets + self._hwc.prod(axis=1)
        needed = int(ends.max()) if len(ends) else 0
        actual = self.data_path.stat().st_size
        if actual < needed:
            raise ValueError(f"{self.data_path}: {actual} bytes, index needs {needed}")

    @property
    def data(self) -> np.ndarray:
        """Flat uint8 memmap of the whole store, opened on first use."""
        if self._data is None:
            # np.memmap refuses zero-length files; an empty store is legal.
            if self.data_path.stat().st_size == 0:
                self._data = np.zeros(0, np.uint8)
            else:
                self._data = np.memmap(self.data_path, dtype=np.uint8, mode="r")
        return self._data

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> np.ndarray:
        i = range(len(self.ids))[i]  # normalises negatives, raises IndexError
        h, w, c = (int(v) for v in self._hwc[i])
        start = int(self._offsets[i])
        return self.data[start : start + h * w * c].reshape(h, w, c)

    def get(self, item_id: str) -> np.ndarray:
        """Array for ``item_id`` (KeyError if absent)."""
        return self[self.position(item_id)]

    def position(self, item_id: str) -> int:
        """Row of ``item_id`` in the index."""
        return self._positions[item_id]

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._positions

    @property
    def shapes(self) -> np.ndarray:
        """(N, 2) int array of height, width."""
        return self._hwc[:, :2].copy()

    def __repr__(self) -> str:
        return f"ArrayStore({str(self.data_path)!r}, n={len(self)})"


def quantise(prob: np.ndarray) -> np.ndarray:
    """Probability map -> uint8 (p x 255, rounded): 4x smaller than float32, error < 0.002."""
    return np.clip(np.rint(prob * 255.0), 0, 255).astype(np.uint8)


def dequantise(q: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) / 255.0


def map_of(stored: np.ndarray) -> np.ndarray:
    """A stored quantised map as probabilities: (h, w) for one class, (h, w, K) for K."""
    return dequantise(stored[..., 0] if stored.shape[-1] == 1 else stored)

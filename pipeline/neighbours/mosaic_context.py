"""Mosaic context (the jigsaw trick beyond folds): a tile padded with its touching neighbours'
real pixels instead of a reflection of itself.

Tiles cut edge to edge from one large image lose what lies across their borders; a network that
sees a salt body's continuation past the edge can tell a body's rim from a stray blob. The
mosaic stage finds touching pairs among train and test tiles together (pipeline/neighbours/mosaic.py's
edge costs) and writes each tile's neighbour per side; `ContextStore` is a view of a store
whose item i is tile i grown by `margin` pixels on every side: a neighbour's pixels where it is
known (and allowed), the tile's own reflection elsewhere. Corners come from a diagonal tile
reached through two known sides.

Honesty: at prediction a tile may borrow any neighbour's pixels (images only, never labels). In
training, the mask is grown the same way, so a side is filled only from a neighbour whose mask
the fold trains on (`allowed`); every other side stays a reflection in image and mask alike,
so the two never disagree."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.config.segment import SegmentCfg
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore
from pipeline.neighbours import mosaic

CORNERS = {"up_left": ("up", "left"), "up_right": ("up", "right"), "down_left": ("down", "left"), "down_right": ("down", "right")}
NEIGHBOURS_CSV = "neighbours.csv"
BORDER = "border_tiles"  # the mosaic artifact's copy of the test tiles next to a train tile


def side_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """Touching pairs (`a` left of / above `b`, `axis` h or v) -> one row per (id, side,
    neighbour_id). A tile that two pairs claim for one side keeps neither: the edges disagree."""
    rows = [(r.a, "right" if r.axis == "h" else "down", r.b) for r in pairs.itertuples()]
    rows += [(r.b, "left" if r.axis == "h" else "up", r.a) for r in pairs.itertuples()]
    table = pd.DataFrame(rows, columns=["id", "side", "neighbour_id"]).astype(str)
    return table[~table.duplicated(["id", "side"], keep=False)].sort_values(["id", "side"]).reset_index(drop=True)


@dataclass(frozen=True)
class Search:
    """The mosaic search over train and test tiles together: the touching pairs by id (with
    the kind of pair: train-train, train-test, test-test) and each tile's neighbour per side."""

    ids: list[str]
    split: np.ndarray  # "train" or "test", per id
    pairs: pd.DataFrame
    sides: pd.DataFrame


def search(train, test, ratio: float) -> Search:
    """Touching pairs among the `train` and `test` stores' tiles (pipeline/neighbours/mosaic.py's
    edge costs and ratio test) and the side table; images only, never masks. The mosaic stage
    and a bundle's predict.py both search this way."""
    ids = [*train.ids, *test.ids]
    if len(set(ids)) < len(ids):
        raise UserError("segment.context: a test id repeats a train id; the neighbour table needs ids unique across both")
    split = np.array(["train"] * len(train) + ["test"] * len(test))
    tiles = mosaic.grayscale_tiles([np.asarray(s[i]) for s in (train, test) for i in range(len(s))], "segment.context")
    pairs = mosaic.find_pairs(tiles, ratio)
    kinds = ["-".join(sorted((split[a], split[b]), reverse=True)) for a, b in zip(pairs["a"], pairs["b"], strict=True)]
    named = pairs.assign(a=[ids[i] for i in pairs["a"]], b=[ids[i] for i in pairs["b"]], kind=kinds)
    return Search(ids, split, named, side_table(named))


def read_sides(folder: Path) -> dict[str, dict[str, str]]:
    """id -> {side: neighbour id} of a mosaic artifact."""
    return sides_of(fileio.read_csv(folder / NEIGHBOURS_CSV, dtype=str))


def sides_of(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """A side table (id, side, neighbour_id) as id -> {side: neighbour id}."""
    out: dict[str, dict[str, str]] = {}
    for r in table.itertuples():
        out.setdefault(r.id, {})[r.side] = r.neighbour_id
    return out


def around(sides: Mapping[str, Mapping[str, str]], item: str, allowed: Collection[str] | None) -> dict[str, str]:
    """The known (and allowed) neighbours of `item` by side and corner; a corner is the tile
    across one known side and then the other, either way round (the first found)."""
    ok = (lambda i: True) if allowed is None else (lambda i: i in allowed)
    own = {s: n for s, n in sides.get(item, {}).items() if ok(n)}
    for corner, (vertical, horizontal) in CORNERS.items():
        for first, second in ((vertical, horizontal), (horizontal, vertical)):
            via = own.get(first)
            diag = sides.get(via, {}).get(second) if via is not None else None
            if diag is not None and ok(diag) and diag != item:
                own[corner] = diag
                break
    return own


def grow(tile: np.ndarray, margin: int, parts: Mapping[str, np.ndarray]) -> np.ndarray:
    """HxWxC tile -> (H+2m)x(W+2m)xC: reflection, overwritten by each neighbour in `parts`
    (side or corner name -> that tile, of the same size) along its border."""
    h, w = tile.shape[:2]
    if margin >= min(h, w):  # a reflection needs a border narrower than the tile
        raise UserError(f"segment.context.margin: {margin} px is not narrower than a {h}x{w} tile")
    m = margin
    out = cv2.copyMakeBorder(tile, m, m, m, m, cv2.BORDER_REFLECT_101)
    out = out.reshape(h + 2 * m, w + 2 * m, -1)
    rows = {"up": (slice(0, m), slice(h - m, h)), "down": (slice(m + h, h + 2 * m), slice(0, m)), None: (slice(m, m + h), slice(0, h))}
    cols = {"left": (slice(0, m), slice(w - m, w)), "right": (slice(m + w, w + 2 * m), slice(0, m)), None: (slice(m, m + w), slice(0, w))}
    tile = tile.reshape(h, w, -1)
    for name, part in parts.items():
        part = part.reshape(*part.shape[:2], -1)
        if part.shape != tile.shape:
            raise UserError(f"segment.context: a neighbour of shape {part.shape} beside a tile of {tile.shape}; tiles must share one size")
        vertical, horizontal = CORNERS.get(name, (name if name in ("up", "down") else None, name if name in ("left", "right") else None))
        (out_r, src_r), (out_c, src_c) = rows[vertical], cols[horizontal]
        out[out_r, out_c] = part[src_r, src_c]
    return out


class ContextStore:
    """A read-only view of `base` (an ArrayStore) whose item i is tile i grown by `margin`
    pixels with its neighbours (`sides`, looked up by id in `pool`: stores of any split)."""

    def __init__(
        self,
        base,
        margin: int,
        sides: Mapping[str, Mapping[str, str]],
        pool: list,
        allowed: Collection[str] | None = None,
    ) -> None:
        self.base, self.margin, self.sides, self.pool, self.allowed = base, margin, sides, pool, allowed
        self.ids = base.ids

    def __len__(self) -> int:
        return len(self.base)

    def _lookup(self, item: str) -> np.ndarray:
        for store in self.pool:
            if item in store:
                return np.asarray(store.get(item))
        raise KeyError(f"segment.context: neighbour {item!r} is in none of the stores")

    def __getitem__(self, i: int) -> np.ndarray:
        item = self.ids[i]
        parts = {name: self._lookup(n) for name, n in around(self.sides, item, self.allowed).items()}
        return grow(np.asarray(self.base[i]), self.margin, parts)

    def get(self, item: str) -> np.ndarray:
        return self[self.position(item)]

    def position(self, item: str) -> int:
        return self.base.position(item)

    def __contains__(self, item: object) -> bool:
        return item in self.base


@dataclass(frozen=True)
class Mosaic:
    """A mosaic artifact's neighbour table and the stores its neighbours are read from."""

    sides: dict[str, dict[str, str]]
    pool: tuple

    @classmethod
    def open(cls, folder: Path, *stores) -> Mosaic:
        """The neighbours of `folder` (a mosaic artifact), read from `stores` and from the
        artifact's own copy of the test tiles that touch a train tile."""
        border = (ArrayStore(folder, BORDER),) if (folder / f"{BORDER}.index.csv").exists() else ()
        return cls(read_sides(folder), (*stores, *border))

    def view(self, base, margin: int, allowed: Collection[str] | None = None, pool=None) -> ContextStore:
        """`base` grown by `margin` px (neighbours in `allowed` alone, when given), the
        neighbours read from `pool` (default: the images)."""
        return ContextStore(base, margin, self.sides, list(self.pool if pool is None else pool), allowed)


def for_model(images, scfg: SegmentCfg, mosaic: Mosaic | None, allowed: Collection[str] | None = None, pool=None):
    """The images (or masks, from `pool`) a model of `scfg` sees: grown when it trains with
    context, by the neighbours in `allowed` alone when given."""
    if not scfg.context.enabled:
        return images
    if mosaic is None:
        raise UserError("segment.context: this model grows its tiles, but no mosaic artifact was given")
    h, w = images[0].shape[:2] if len(images) else (0, 0)
    side = max(h, w) + 2 * scfg.context.margin
    if scfg.input.mode == "pad" and side > scfg.input.size:
        raise UserError(
            f"segment.context.margin: {h}x{w} tiles grown by {scfg.context.margin} px exceed input.size {scfg.input.size} (mode pad)"
        )
    return mosaic.view(images, scfg.context.margin, allowed, pool)


def crop(maps: np.ndarray, margin: int) -> np.ndarray:
    """A map predicted on a grown tile (H+2m, W+2m[, C]) -> the tile's own (H, W[, C])."""
    if margin == 0:
        return maps
    return maps[margin : maps.shape[0] - margin, margin : maps.shape[1] - margin]


def margin_of(images) -> int:
    """The context margin of an image source (0 for a plain store or list)."""
    return int(getattr(images, "margin", 0))

"""Mosaic (jigsaw) reconstruction of neighbouring tiles, for leak-free folds.

Competition tiles are often cut edge to edge from larger images (TGS: seismic sections). Two
tiles that touch share a salt body, so a random split puts half of it in train and half in
validation and the CV is optimistic. This finds touching pairs from their edges and joins them
into groups for StratifiedGroupKFold.

Two edge costs of "A left of B" (or "A above B"), each a mean squared difference:
- seam: A's last line against B's first, divided by the tiles' own line-to-line difference
  (a seam between true neighbours looks like any other pair of adjacent lines);
- extrapolation: each side's last two lines extrapolated one pixel across the seam, against
  the other side's first line.
A pair is kept when, under either cost, each tile is the other's cheapest partner and the cost
is clearly below both runner-ups (`margin`, a ratio test): layered textures make many edges
alike, and the ratio test keeps the ambiguous ones out. On the demo (true positions known,
tests/test_mosaic.py) the seam cost finds most side-by-side pairs, the extrapolation cost most
of the few vertical pairs that can be told apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.core.errors import UserError


def _pairwise_sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean squared difference between every row of a and every row of b."""
    d = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0) / a.shape[1]


def edge_costs(tiles: np.ndarray, axis: str) -> dict[str, np.ndarray]:
    """N x N costs of tile i placed left of (axis 'h') or above (axis 'v') tile j, by name; inf
    where impossible (itself, or a flat edge, which would match any other flat edge)."""
    t = tiles.astype(np.float64)
    if axis == "h":
        a1, a2, b1, b2 = t[:, :, -1], t[:, :, -2], t[:, :, 0], t[:, :, 1]
    else:
        a1, a2, b1, b2 = t[:, -1, :], t[:, -2, :], t[:, 0, :], t[:, 1, :]
    inner = 0.5 * (((a1 - a2) ** 2).mean(1)[:, None] + ((b1 - b2) ** 2).mean(1)[None, :]) + 1.0
    costs = {"seam": _pairwise_sq(a1, b1) / inner, "extrapolation": _pairwise_sq(2 * a1 - a2, b1) + _pairwise_sq(a1, 2 * b1 - b2)}
    for cost in costs.values():
        cost[a1.std(1) < 1.0, :] = np.inf
        cost[:, b1.std(1) < 1.0] = np.inf
        np.fill_diagonal(cost, np.inf)
    return costs


def mutual_pairs(cost: np.ndarray, margin: float) -> list[tuple[int, int, float]]:
    """(i, j, cost) where j is i's cheapest partner and i is j's, both by a ratio `margin`."""
    if cost.shape[0] < 3:
        return []
    best_j, best_i = cost.argmin(1), cost.argmin(0)
    second_row = np.partition(cost, 1, axis=1)[:, 1]
    second_col = np.partition(cost, 1, axis=0)[1, :]
    out = []
    for i, j in enumerate(best_j):
        c = cost[i, j]
        if best_i[j] == i and np.isfinite(c) and c < margin * second_row[i] and c < margin * second_col[j]:
            out.append((i, int(j), float(c)))
    return out


def find_pairs(tiles: np.ndarray, margin: float) -> pd.DataFrame:
    """Touching pairs among equally sized tiles (N, H, W) as a table a, b, axis, by (cost name)."""
    found: dict[tuple[int, int, str], str] = {}
    for axis in ("h", "v"):
        for name, cost in edge_costs(tiles, axis).items():
            for i, j, _ in mutual_pairs(cost, margin):
                found.setdefault((i, j, axis), name)
    return pd.DataFrame([(i, j, axis, by) for (i, j, axis), by in found.items()], columns=["a", "b", "axis", "by"])


def groups_from_pairs(n: int, pairs: pd.DataFrame) -> np.ndarray:
    """Connected components as a group id per tile; lone tiles get their own."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs["a"].to_numpy(int), pairs["b"].to_numpy(int))), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def grayscale_tiles(images: list[np.ndarray], key: str = "folds.mosaic") -> np.ndarray:
    """(N, H, W) float32 stack; channels averaged. All tiles must share one size (a UserError
    naming the config `key` otherwise)."""
    shapes = {im.shape[:2] for im in images}
    if len(shapes) > 1:
        raise UserError(f"{key}: needs tiles of one size, found {len(shapes)} sizes (e.g. {sorted(shapes)[:2]})")
    return np.stack([np.asarray(im, np.float32).mean(axis=2) if im.ndim == 3 else np.asarray(im, np.float32) for im in images])

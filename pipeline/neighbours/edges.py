"""Neighbour-edge features for the LB-score predictor (scorer.edges): how an image's predicted
mask meets its touching neighbours' predicted masks along the shared edges (the mosaic stage's
neighbour table). A salt body cut by a tile edge continues in the neighbour; a mask that stops
at an edge where the neighbour's mask goes on, or the reverse, marks a doubtful prediction.

Which neighbours a row may read (neighbours' labels are never read, only their maps):
- an OOF image: train neighbours of its own fold alone. Their OOF maps come from the model that
  held that fold out, the one that predicted the image itself; any other fold's model trained
  on the image, and its map of a neighbour could carry the image's mask across the edge.
- a test image: every train neighbour (its OOF map) and every test neighbour (its test map);
  no test label exists for a fit to learn from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

COLUMNS = ("edge_n", "edge_own_fg", "edge_nb_fg", "edge_disagree")
# The tile's own edge line and the neighbour's line that touches it, per side.
_LINES = {
    "up": (lambda m: m[0, :], lambda n: n[-1, :]),
    "down": (lambda m: m[-1, :], lambda n: n[0, :]),
    "left": (lambda m: m[:, 0], lambda n: n[:, -1]),
    "right": (lambda m: m[:, -1], lambda n: n[:, 0]),
}


def edge_row(own: np.ndarray, neighbours: Mapping[str, np.ndarray]) -> list[float]:
    """COLUMNS of one image's (H, W) map against its neighbours' maps by side: the number of
    sides known, the foreground share of its edge lines and of the neighbours' touching lines,
    and the mean absolute difference of the two lines' probabilities (NaN without neighbours)."""
    pairs = [(_LINES[s][0](own), _LINES[s][1](n)) for s, n in neighbours.items() if s in _LINES and n.shape == own.shape]
    if not pairs:
        return [0.0, np.nan, np.nan, np.nan]
    mine, theirs = np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
    return [float(len(pairs)), float((mine > 0.5).mean()), float((theirs > 0.5).mean()), float(np.abs(mine - theirs).mean())]


def edge_features(
    ids: list[str], maps: list[np.ndarray], sides: Mapping[str, Mapping[str, str]], lookup: Callable[[str, str], np.ndarray | None]
) -> pd.DataFrame:
    """COLUMNS per image of `ids` (with its map in `maps`); `lookup(image, neighbour)` gives
    the neighbour's map when this image may read it (None otherwise)."""
    rows = []
    for img, own in zip(ids, maps, strict=True):
        found = {s: lookup(img, n) for s, n in sides.get(img, {}).items()}
        rows.append(edge_row(np.asarray(own, np.float32), {s: np.asarray(m, np.float32) for s, m in found.items() if m is not None}))
    return pd.DataFrame(rows, index=ids, columns=list(COLUMNS))


def oof_lookup(ids: list[str], maps: list[np.ndarray], fold: Mapping[str, int]) -> Callable[[str, str], np.ndarray | None]:
    """An OOF image reads the OOF maps of train neighbours in its own fold alone."""
    at = dict(zip(ids, maps, strict=True))
    return lambda img, n: at.get(n) if n in fold and fold[n] == fold[img] else None


def test_lookup(oof: Mapping[str, np.ndarray], test: Mapping[str, np.ndarray]) -> Callable[[str, str], np.ndarray | None]:
    """A test image reads any neighbour's map: a test neighbour's test map first, else a train
    neighbour's OOF map."""
    return lambda img, n: test.get(n, oof.get(n))

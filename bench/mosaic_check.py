"""How trustworthy are the mosaic pairs (issue 18)? The touching pairs that pipeline/neighbours/mosaic.py's
edge costs find among a config's train and test tiles, for each cost alone, either (what
find_pairs keeps) or both agreeing, at several ratio-test margins, checked against:
- the true tile positions where they are known (the demo's tile_positions.csv): precision and
  recall;
- a depth column in the metadata (tgs_salt's depths.csv `z`), where positions are unknown: in
  a true side-by-side pair both tiles lie at about one depth, and in a true vertical pair the
  upper tile is the shallower. Random pairs give the baseline.

  .venv/bin/python bench/mosaic_check.py --config configs/demo.yaml --positions data/demo/tile_positions.csv
  .venv/bin/python bench/mosaic_check.py --config configs/tgs_salt.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from mosaic_pairs import true_pairs  # noqa: E402

from pipeline.config import loader as config  # noqa: E402
from pipeline.core.store import ArrayStore  # noqa: E402
from pipeline.engine import cache  # noqa: E402
from pipeline.neighbours import mosaic  # noqa: E402
from pipeline.stages import GRAPH  # noqa: E402

SAME_DEPTH = 50  # depth units (tgs: feet) within which a side-by-side pair counts as level


def variants(costs: dict[str, dict[str, np.ndarray]], margin: float) -> dict[str, set[tuple[int, int, str]]]:
    """Pairs (i, j, axis) by each cost, by either (mosaic.find_pairs) and by both."""
    by = {name: set() for name in ("seam", "extrapolation")}
    for axis, named in costs.items():
        for name, cost in named.items():
            by[name] |= {(i, j, axis) for i, j, _ in mosaic.mutual_pairs(cost, margin)}
    return by | {"either": by["seam"] | by["extrapolation"], "both": by["seam"] & by["extrapolation"]}


def depth_row(pairs: set[tuple[int, int, str]], z: np.ndarray) -> str:
    """Side-by-side pairs within SAME_DEPTH and vertical pairs whose upper tile is shallower."""
    h = np.array([abs(z[i] - z[j]) <= SAME_DEPTH for i, j, axis in pairs if axis == "h"])
    v = np.array([z[i] < z[j] for i, j, axis in pairs if axis == "v"])
    share = lambda a: f"{a.mean():.3f} ({len(a)})" if len(a) else "- (0)"  # noqa: E731
    return f"{share(h)} | {share(v)}"


def depths(cfg, ids: list[str]) -> np.ndarray | None:
    """Each tile's metadata `z`, or None when no metadata file has that column."""
    tables = [pd.read_csv(p, dtype={"id": str}) for p in cfg.data.metadata]
    tables = [t for t in tables if "z" in t.columns]
    if not tables:
        return None
    z = pd.concat(tables).drop_duplicates("id").set_index("id")["z"]
    return z.reindex(ids).to_numpy(float)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--positions", default=None, help="tile_positions.csv (id, section, row, col), where known")
    ap.add_argument("--margins", type=float, nargs="+", default=[0.8, 0.6, 0.5])
    args = ap.parse_args()
    cfg = config.load(args.config, args.set)
    stores = [ArrayStore(cache.run_stage(GRAPH, cfg, s)[0], name) for s, name in (("ingest", "images"), ("ingest_test", "test_images"))]
    ids = [str(i) for s in stores for i in s.ids]
    tiles = mosaic.grayscale_tiles([np.asarray(s.get(i)) for s in stores for i in s.ids])
    costs = {axis: mosaic.edge_costs(tiles, axis) for axis in ("h", "v")}
    truth = true_pairs(pd.read_csv(args.positions, dtype={"id": str})) if args.positions else None
    z = depths(cfg, ids)
    print(f"{len(ids)} train and test tiles" + (f", {len(truth)} touching pairs" if truth else ""))
    if z is not None:
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, len(ids), (2, 100_000))
        base = np.abs(z[a] - z[b]) <= SAME_DEPTH
        print(f"random pairs: level within {SAME_DEPTH} {base.mean():.3f}, first shallower {np.mean(z[a] < z[b]):.3f}")
    print("| margin | cost | pairs (h, v) | precision | recall | h level (n) | v upper shallower (n) |")
    print("|---|---|---|---|---|---|---|")
    for margin in args.margins:
        for name, pairs in variants(costs, margin).items():
            n_h = sum(axis == "h" for *_, axis in pairs)
            row = f"| {margin} | {name} | {len(pairs)} ({n_h}, {len(pairs) - n_h}) |"
            if truth is not None:
                hits = len({(ids[i], ids[j], axis) for i, j, axis in pairs} & truth)
                row += f" {hits / max(len(pairs), 1):.3f} | {hits / len(truth):.3f} |"
            else:
                row += " - | - |"
            row += f" {depth_row(pairs, z)} |" if z is not None else " - | - |"
            print(row)


if __name__ == "__main__":
    main()

"""Mosaic (jigsaw) grouping: touching tiles found from their edges, and folds that keep them together."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import data_overrides

from pipeline.config import loader as config
from pipeline.core.errors import ConfigError, UserError
from pipeline.data.tables import load_folds
from pipeline.demo import binary as demo
from pipeline.engine import cache
from pipeline.neighbours import mosaic
from pipeline.stages import GRAPH

TILE = 101


def _cut(seed: int, rows: int, cols: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Tiles cut edge to edge from one smooth random texture, and their (row, col)."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.normal(0, 1, (rows * TILE, cols * TILE)).astype(np.float32), (0, 0), 3)
    big = np.clip(128 + 40 * big / big.std(), 0, 255).astype(np.uint8)
    pos = [(r, c) for r in range(rows) for c in range(cols)]
    tiles = np.stack([big[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] for r, c in pos])
    return tiles, pos


def test_pairs_of_a_cut_image_are_found_and_correct():
    tiles, pos = _cut(0, 4, 5)
    order = np.random.default_rng(1).permutation(len(tiles))
    tiles, pos = tiles[order], [pos[i] for i in order]
    pairs = mosaic.find_pairs(mosaic.grayscale_tiles(list(tiles)), margin=0.8)
    offset = {"h": (0, 1), "v": (1, 0)}
    right = [
        (pos[b][0] - pos[a][0], pos[b][1] - pos[a][1]) == offset[ax] for a, b, ax in zip(pairs["a"], pairs["b"], pairs["axis"], strict=True)
    ]
    assert all(right)  # every pair found is a true neighbour, in the right direction
    assert len(pairs) >= 0.8 * (4 * 4 + 3 * 5)  # and most of the 31 true pairs are found
    groups = mosaic.groups_from_pairs(len(tiles), pairs)
    assert len(set(groups)) == 1


def test_tiles_of_different_images_stay_apart():
    a, _ = _cut(0, 3, 3)
    b, _ = _cut(5, 3, 3)
    tiles = np.concatenate([a, b])
    groups = mosaic.groups_from_pairs(len(tiles), mosaic.find_pairs(mosaic.grayscale_tiles(list(tiles)), 0.8))
    assert set(groups[:9]).isdisjoint(groups[9:])


def test_flat_tiles_are_never_paired():
    flat = np.full((6, TILE, TILE), 90, np.uint8)
    assert mosaic.find_pairs(mosaic.grayscale_tiles(list(flat)), 0.8).empty


def test_groups_from_pairs_are_connected_components():
    pairs = pd.DataFrame({"a": [0, 1, 4], "b": [1, 2, 5], "axis": ["h", "v", "h"]})
    g = mosaic.groups_from_pairs(7, pairs)
    assert g[0] == g[1] == g[2] and g[4] == g[5]
    assert len({g[0], g[3], g[4], g[6]}) == 4


# ----------------------------------------------------------------------------- folds stage


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosaic") / "demo"
    demo.generate(root, seed=2, n_train=400, n_test=20)
    return root


def _cfg(tmp_path, data, *overrides):
    return config.load("configs/demo.yaml", [f"experiment.artifacts={tmp_path}", *data_overrides(data), *overrides])


def test_mosaic_folds_keep_touching_tiles_together(tmp_path, demo_data):
    cfg = _cfg(tmp_path, demo_data, "folds.mosaic.enabled=true")
    folder = cache.run_stage(GRAPH, cfg, "folds")[0]
    folds = load_folds(folder).set_index("id")
    pairs = pd.read_csv(folder / "mosaic_pairs.csv", dtype={"a": str, "b": str})
    assert len(pairs) > 20
    assert (folds.loc[pairs["a"], "fold"].to_numpy() == folds.loc[pairs["b"], "fold"].to_numpy()).all()
    # most found pairs are true neighbours (positions the pipeline never reads)
    pos = pd.read_csv(demo_data / "tile_positions.csv", dtype={"id": str}).set_index("id")
    a, b = pos.loc[pairs["a"]], pos.loc[pairs["b"]]
    step = np.where(pairs["axis"] == "h", b["col"].to_numpy() - a["col"].to_numpy(), b["row"].to_numpy() - a["row"].to_numpy())
    true = (a["section"].to_numpy() == b["section"].to_numpy()) & (step == 1)
    assert true.mean() > 0.9
    # without mosaic groups, a random split separates many of these pairs
    plain = load_folds(cache.run_stage(GRAPH, _cfg(tmp_path, demo_data), "folds")[0]).set_index("id")
    assert (plain.loc[pairs["a"], "fold"].to_numpy() != plain.loc[pairs["b"], "fold"].to_numpy()).mean() > 0.3


def test_mosaic_refuses_tiles_of_different_sizes(tmp_path, demo_data):
    odd = next((demo_data / "train" / "images").glob("*.png"))
    img = cv2.imread(str(odd), cv2.IMREAD_GRAYSCALE)
    data = tmp_path / "odd"
    for sub in ("train/images", "train/masks", "test/images", "test_solution/masks"):
        (data / sub).mkdir(parents=True)
    for sub in ("train/images", "train/masks"):
        for p in sorted((demo_data / sub).glob("*.png"))[:10]:
            (data / sub / p.name).write_bytes(p.read_bytes())
    cv2.imwrite(str(data / "train/images" / odd.name), cv2.resize(img, (120, 120)))
    cv2.imwrite(str(data / "train/masks" / odd.name), np.zeros((120, 120), np.uint8))
    (data / "test/images" / "t.png").write_bytes(odd.read_bytes())
    (data / "metadata.csv").write_text((demo_data / "metadata.csv").read_text())
    cfg = _cfg(tmp_path / "art", data, "folds.mosaic.enabled=true", "folds.n_folds=2")
    with pytest.raises(UserError, match="folds.mosaic: needs tiles of one size"):
        cache.run_stage(GRAPH, cfg, "folds")


def test_mosaic_and_group_column_are_exclusive(tmp_path, demo_data):
    with pytest.raises(ConfigError, match="choose one way of grouping"):
        _cfg(tmp_path, demo_data, "folds.mosaic.enabled=true", "folds.group_column=depth")


def test_mosaic_off_keeps_the_folds_key(tmp_path, demo_data):
    off = GRAPH.key_material(_cfg(tmp_path, demo_data), "folds")["config"]["folds"]
    assert "mosaic" not in off
    margin_only = _cfg(tmp_path, demo_data, "folds.mosaic.margin=0.5")
    assert GRAPH.stage_key(margin_only, "folds") == GRAPH.stage_key(_cfg(tmp_path, demo_data), "folds")

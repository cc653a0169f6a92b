"""segment.context: tiles grown with their touching neighbours' pixels (pipeline/neighbours/mosaic_context.py)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.errors import ConfigError, UserError
from pipeline.core.store import ArrayStore, write_store
from pipeline.data.geometry import Geometry
from pipeline.engine import cache
from pipeline.inference.predict import InferSpec, predict
from pipeline.neighbours import edges
from pipeline.neighbours import mosaic_context as context
from pipeline.stages import GRAPH
from pipeline.training.trainset import TrainSet

T = 20  # tile side


def _grid(rows: int = 3, cols: int = 3, seed: int = 0) -> tuple[np.ndarray, dict[tuple[int, int], str]]:
    """A random image cut into rows x cols tiles; its ids by (row, col)."""
    big = np.random.default_rng(seed).integers(0, 255, (rows * T, cols * T, 1), dtype=np.uint8)
    return big, {(r, c): f"t{r}{c}" for r in range(rows) for c in range(cols)}


def _tile(big: np.ndarray, r: int, c: int) -> np.ndarray:
    return big[r * T : (r + 1) * T, c * T : (c + 1) * T]


def _pairs(at: dict[tuple[int, int], str]) -> pd.DataFrame:
    rows = [(i, at[(r, c + 1)], "h") for (r, c), i in at.items() if (r, c + 1) in at]
    rows += [(i, at[(r + 1, c)], "v") for (r, c), i in at.items() if (r + 1, c) in at]
    return pd.DataFrame(rows, columns=["a", "b", "axis"])


def _store(tmp_path, name: str, items: dict[str, np.ndarray]) -> ArrayStore:
    write_store(tmp_path, name, items.items())
    return ArrayStore(tmp_path, name)


def _sides(at) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for r in context.side_table(_pairs(at)).itertuples():
        out.setdefault(r.id, {})[r.side] = r.neighbour_id
    return out


def test_a_tile_with_all_eight_neighbours_is_grown_into_the_true_surroundings(tmp_path):
    big, at = _grid()
    store = _store(tmp_path, "images", {i: _tile(big, r, c) for (r, c), i in at.items()})
    view = context.ContextStore(store, 7, _sides(at), [store])
    grown = view.get("t11")
    assert np.array_equal(grown, big[T - 7 : 2 * T + 7, T - 7 : 2 * T + 7])
    # A corner tile knows two sides and one diagonal: the rest is its own reflection.
    corner = view.get("t00")
    reflect = cv2.copyMakeBorder(_tile(big, 0, 0), 7, 7, 7, 7, cv2.BORDER_REFLECT_101)[..., None]
    assert np.array_equal(corner[:7], reflect[:7]) and np.array_equal(corner[:, :7], reflect[:, :7])
    assert np.array_equal(corner[7:, 7:], big[: T + 7, : T + 7])


def test_a_side_two_pairs_claim_is_dropped_and_disallowed_neighbours_stay_reflected():
    pairs = pd.DataFrame({"a": ["x", "y", "x"], "b": ["z", "z", "w"], "axis": ["h", "h", "v"]})
    table = context.side_table(pairs)
    assert set(zip(table["id"], table["side"], strict=True)) == {("x", "down"), ("w", "up"), ("x", "right"), ("y", "right")}
    _, at = _grid()
    sides = _sides(at)
    assert context.around(sides, "t11", None).keys() == {"up", "down", "left", "right", "up_left", "up_right", "down_left", "down_right"}
    # t01 not allowed: the up side goes, and the upper corners survive only through the other side.
    allowed = set(at.values()) - {"t01"}
    near = context.around(sides, "t11", allowed)
    assert "up" not in near and near["up_left"] == "t00" and near["up_right"] == "t02"
    assert context.around(sides, "t11", {"t11"}) == {}


def test_a_pointwise_model_predicts_the_same_tile_maps_with_and_without_context(tmp_path, smoke_cfg):
    """The grown tile is predicted whole and cut back exactly: a per-pixel model, for which the
    border cannot matter, gives the plain tiles' maps to the pixel."""
    big, at = _grid()
    store = _store(tmp_path, "images", {i: _tile(big, r, c) for (r, c), i in at.items()})
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 1, 1)

    class Pointwise(torch.nn.Module):
        def forward(self, x):
            return {"mask": conv(x)}

    spec = InferSpec(Geometry("pad", 32), ["none"], torch.device("cpu"), smoke_cfg().segment.train)
    idx = np.arange(len(store))
    plain = dict(predict(Pointwise(), store, idx, spec))
    grown = dict(predict(Pointwise(), context.ContextStore(store, 5, _sides(at), [store]), idx, spec))
    for i in idx:
        assert grown[i]["mask"].shape == (T, T)
        np.testing.assert_allclose(grown[i]["mask"], plain[i]["mask"], atol=1e-6)


def test_margin_wider_than_a_tile_is_refused(tmp_path):
    with pytest.raises(UserError, match="segment.context.margin"):
        context.grow(np.zeros((8, 8, 1), np.uint8), 8, {})
    store = _store(tmp_path, "images", {"a": np.zeros((20, 20, 1), np.uint8)})
    with pytest.raises(UserError, match="exceed input.size 32"):
        context.for_model(store, _context_section(7), context.Mosaic({}, ()))
    assert context.for_model(store, _context_section(6), context.Mosaic({}, ())).margin == 6


def _context_section(margin: int) -> SimpleNamespace:
    """What for_model reads of a segment section: context on, pad mode at 32 px."""
    return SimpleNamespace(context=SimpleNamespace(enabled=True, margin=margin), input=SimpleNamespace(mode="pad", size=32))


def test_context_is_refused_with_pseudo_rounds_and_tile_mode(smoke_cfg):
    with pytest.raises(ConfigError, match="segment.context: pseudo rounds read plain tiles"):
        smoke_cfg("segment.context.enabled=true")
    with pytest.raises(ConfigError, match="segment.context.enabled: mosaic context needs input.mode pad or resize"):
        smoke_cfg(
            "segment.context.enabled=true",
            "pseudo.rounds=0",
            "ensemble.models=[segment]",
            "segment.input.mode=tile",
            "segment.input.tile_overlap=0",
        )


def test_context_models_are_refused_as_teachers_or_student_and_must_share_one_search(smoke_cfg):
    base = ("pseudo.rounds=0", "ensemble.models=[segment, ctx]", "segment.models={ctx: {context: {enabled: true}}}")
    with pytest.raises(ConfigError, match="segment.context: the distill stage reads plain tiles"):
        smoke_cfg(*base, "distill.enabled=true")
    smoke_cfg(*base, "distill.enabled=true", "distill.teachers=[segment]")  # a plain teacher and student: fine
    with pytest.raises(ConfigError, match="segment.context.ratio: every model with context"):
        smoke_cfg(*base[:2], "segment.models={ctx: {context: {enabled: true, ratio: 0.9}}}", "segment.context.enabled=true")


def test_the_switch_is_hashed_only_when_on_and_brings_the_mosaic_stage(smoke_cfg):
    off = smoke_cfg("pseudo.rounds=0", "ensemble.models=[segment]")
    on = smoke_cfg("pseudo.rounds=0", "ensemble.models=[segment]", "segment.context.enabled=true")
    assert "context" not in GRAPH.key_material(off, "segment")["config"]["segment"]
    assert GRAPH.key_material(on, "segment")["config"]["segment"]["context"]["margin"] == 13
    stage = GRAPH.get("segment")
    assert "mosaic" not in stage.models(off) and "mosaic" in stage.models(on)
    assert "mosaic" in GRAPH.get("ensemble").models(on)


@pytest.mark.slow
def test_segment_trains_on_grown_tiles_from_its_own_part_and_predicts_grown_oof(smoke_cfg, monkeypatch):
    cfg = smoke_cfg(
        "pseudo.rounds=0",
        "ensemble.models=[segment]",
        "segment.context.enabled=true",
        "segment.context.margin=10",
        "segment.train.folds=[0]",
    )
    from pipeline.training import segmentation

    seen = []
    dataset = segmentation.SegDataset.__init__

    def spy(self, images, masks, indices, *args, **kwargs):
        seen.append((images, masks, indices))
        dataset(self, images, masks, indices, *args, **kwargs)

    monkeypatch.setattr(segmentation.SegDataset, "__init__", spy)
    folder, _ = cache.run_stage(GRAPH, cfg, "segment")
    mosaic_dir = cache.stage_dir(GRAPH, cfg, "mosaic")
    assert (mosaic_dir / context.NEIGHBOURS_CSV).exists()
    images, masks, idx = seen[0]
    data = TrainSet.open(cache.stage_dir(GRAPH, cfg, "ingest"), cache.stage_dir(GRAPH, cfg, "folds"), None, mosaic_dir)
    train_idx, val_idx = data.split(0, 0, cfg.experiment.seed)
    assert np.array_equal(idx, train_idx)
    part = {data.images.ids[int(i)] for i in train_idx}
    assert images.margin == 10 and images.allowed == part and masks.allowed == part  # no validation tile's pixels or mask
    grown = [i for i in train_idx if context.around(data.mosaic.sides, data.images.ids[int(i)], part)]
    assert grown, "the smoke data has touching train tiles"
    i = int(grown[0])
    assert images[i].shape[:2] == masks[i].shape[:2] == (101 + 20, 101 + 20)
    oof = ArrayStore(folder, "oof")
    assert oof.get(data.images.ids[int(val_idx[0])]).shape[:2] == (101, 101)


def test_edge_features_compare_the_touching_lines():
    own = np.zeros((4, 4), np.float32)
    own[:, -1] = 1.0  # a mask that reaches the right edge
    right = np.zeros((4, 4), np.float32)  # ... where the neighbour's mask does not go on
    up = np.ones((4, 4), np.float32)
    assert edges.edge_row(own, {})[0] == 0 and np.isnan(edges.edge_row(own, {})[3])
    n, own_fg, nb_fg, disagree = edges.edge_row(own, {"right": right})
    assert (n, own_fg, nb_fg, disagree) == (1, 1.0, 0.0, 1.0)
    n, own_fg, nb_fg, disagree = edges.edge_row(own, {"right": right, "up": up})
    assert n == 2 and own_fg == 5 / 8 and nb_fg == 4 / 8 and disagree == (4 + 3) / 8


def test_an_oof_image_reads_its_own_folds_neighbours_alone_and_a_test_image_any():
    ids, maps = ["a", "b", "c"], [np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)]
    look = edges.oof_lookup(ids, maps, {"a": 0, "b": 0, "c": 1})
    assert look("a", "b") is maps[1] and look("a", "c") is None and look("a", "t") is None
    table = edges.edge_features(ids, maps, {"a": {"right": "b", "down": "c"}}, look)
    assert table.loc["a", "edge_n"] == 1 and table.loc["b", "edge_n"] == 0
    test = edges.test_lookup(dict(zip(ids, maps, strict=True)), {"t": maps[0]})
    assert test("t", "c") is maps[2] and test("x", "t") is maps[0]


def test_scorer_edges_is_hashed_only_when_on_and_reads_the_mosaic_stage(smoke_cfg):
    off, on = smoke_cfg(), smoke_cfg("scorer.edges=true")
    assert "edges" not in GRAPH.key_material(off, "scorer")["config"]["scorer"]
    stage = GRAPH.get("scorer")
    assert "mosaic" not in stage.models(off) and "mosaic" in stage.models(on)
    # The pair search's ratio reaches the mosaic stage's key with context off as well.
    assert GRAPH.stage_key(on, "mosaic") != GRAPH.stage_key(smoke_cfg("scorer.edges=true", "segment.context.ratio=0.5"), "mosaic")


@pytest.mark.slow
def test_scorer_fits_with_edge_features_of_oof_and_test_images(smoke_cfg):
    cfg = smoke_cfg("scorer.edges=true", "scorer.policy=per_image")
    folder, _ = cache.run_stage(GRAPH, cfg, "scorer")
    feats = pd.read_csv(folder / "oof_features.csv", index_col=0)
    assert set(edges.COLUMNS) <= set(feats.columns)
    assert (feats["edge_n"] > 0).any()  # the smoke tiles touch, and some in one fold
    used = pd.read_csv(folder / "feature_importance.csv")
    assert set(edges.COLUMNS) <= set(used["feature"])


def test_the_mosaic_stage_searches_nothing_for_a_config_without_context(smoke_cfg):
    from pipeline.config.zoo import mosaic_used

    assert not mosaic_used(smoke_cfg())
    assert mosaic_used(smoke_cfg("scorer.edges=true"))
    assert mosaic_used(smoke_cfg("pseudo.rounds=0", "ensemble.models=[segment, c]", "segment.models={c: {context: {enabled: true}}}"))
    folder, _ = cache.run_stage(GRAPH, smoke_cfg("segment.context.ratio=0.75"), "mosaic")
    assert not (folder / context.NEIGHBOURS_CSV).exists()
    # The unused search's artifact never serves a config that reads the stage.
    used_folder, _ = cache.run_stage(GRAPH, smoke_cfg("scorer.edges=true", "segment.context.ratio=0.75"), "mosaic")
    assert used_folder != folder and (used_folder / context.NEIGHBOURS_CSV).exists()

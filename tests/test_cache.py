"""Tests for stage keys, artifact folders, manifests and skip/rerun logic.

Uses the real cheap stages (ingest, ingest_test, folds) on a tiny generated dataset, plus two
throwaway stages registered for the test and removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import data_overrides

from pipeline import stages as _stages  # noqa: F401  (registers the real stages)
from pipeline.config import loader as config
from pipeline.config import typed
from pipeline.data.sources import IngestError
from pipeline.demo import binary as demo
from pipeline.engine import cache
from pipeline.engine.cache import Stage
from pipeline.stages import GRAPH

REPO = Path(__file__).resolve().parent.parent
DEMO_CFG = REPO / "configs" / "demo.yaml"
N_TRAIN, N_TEST = 60, 20


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "demo"
    demo.generate(root, seed=1, n_train=N_TRAIN, n_test=N_TEST)
    return root


def _cfg(tmp_path: Path, *overrides: str, data: Path | None = None):
    base = [f"experiment.artifacts={tmp_path / 'artifacts'}"]
    return config.load(DEMO_CFG, [*base, *(data_overrides(data) if data else []), *overrides])


class Dummies:
    """Two throwaway stages: t_up (reads pseudo.rounds) -> t_down (reads pseudo.epochs)."""

    def __init__(self) -> None:
        self.calls = {"t_up": 0, "t_down": 0}
        self.fail_down = False
        self.seen_partial: list[bool] = []
        self.graph = GRAPH  # the pipeline's stages and these two (the fixture adds them)

    def up(self, ctx: cache.Context) -> dict:
        self.calls["t_up"] += 1
        ctx.dir.mkdir(parents=True, exist_ok=True)
        (ctx.dir / "up.txt").write_text(str(ctx.cfg.pseudo.rounds))
        ctx.extra_manifest["note"] = "from t_up"
        return {"rounds": ctx.cfg.pseudo.rounds, "score": 0.5}

    def down(self, ctx: cache.Context) -> None:
        self.calls["t_down"] += 1
        assert (ctx.upstream["t_up"] / "up.txt").read_text() == str(ctx.cfg.pseudo.rounds)
        self.seen_partial.append((ctx.dir / "partial.txt").exists())
        ctx.dir.mkdir(parents=True, exist_ok=True)
        (ctx.dir / "partial.txt").write_text("half done")
        if self.fail_down:
            raise RuntimeError("boom midway")
        (ctx.dir / "down.txt").write_text("done")
        return None  # no metrics


@pytest.fixture
def dummies():
    d = Dummies()
    d.graph = GRAPH.with_stages(
        Stage("t_up", ("pseudo.rounds",), (), d.up, doc="test upstream"),
        Stage("t_down", ("pseudo.epochs",), ("t_up",), d.down, doc="test downstream"),
    )
    return d


def _states(cfg, graph=GRAPH) -> dict[str, str]:
    return {name: state for name, state, _ in cache.status(graph, cfg)}


# ----------------------------------------------------------------------------- dummy stages


def test_dummies_stay_out_of_the_pipeline_graph(dummies):
    assert "t_up" in dummies.graph.stages and "t_up" not in GRAPH.stages and "t_down" not in GRAPH.stages
    assert list(GRAPH.stages)[:5] == ["ingest", "ingest_test", "embed", "mosaic", "folds"]


def test_second_run_is_skipped(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, ran = cache.run_stage(g, cfg, "t_up")
    assert ran and dummies.calls["t_up"] == 1
    key = g.stage_key(cfg, "t_up")
    assert folder == tmp_path / "artifacts" / "demo" / f"t_up-{key}"
    assert (folder / "up.txt").exists() and (folder / cache.MANIFEST).exists()
    folder2, ran2 = cache.run_stage(g, cfg, "t_up")
    assert folder2 == folder and not ran2
    assert dummies.calls["t_up"] == 1
    # a freshly loaded, identical config maps to the same key and is cached too
    assert not cache.run_stage(g, _cfg(tmp_path), "t_up")[1]
    assert dummies.calls["t_up"] == 1


def test_downstream_runs_upstream_first(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    _, ran = cache.run_stage(g, cfg, "t_down")
    assert ran and dummies.calls == {"t_up": 1, "t_down": 1}
    assert cache.is_done(g, cfg, "t_up") and cache.is_done(g, cfg, "t_down")
    assert not cache.run_stage(g, cfg, "t_down")[1]
    assert dummies.calls == {"t_up": 1, "t_down": 1}


def test_downstream_only_change_reruns_only_downstream(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    cache.run_stage(g, cfg, "t_down")
    up_key, down_key = g.stage_key(cfg, "t_up"), g.stage_key(cfg, "t_down")
    cfg2 = _cfg(tmp_path, f"pseudo.epochs={cfg.pseudo.epochs + 1}")
    assert g.stage_key(cfg2, "t_up") == up_key
    assert g.stage_key(cfg2, "t_down") != down_key
    _, ran = cache.run_stage(g, cfg2, "t_down")
    assert ran and dummies.calls == {"t_up": 1, "t_down": 2}
    # both versions of the downstream stage stay on disk; the old config still hits the cache
    assert cache.is_done(g, cfg, "t_down") and cache.is_done(g, cfg2, "t_down")
    assert not cache.run_stage(g, cfg, "t_down")[1]
    assert dummies.calls == {"t_up": 1, "t_down": 2}


def test_upstream_change_reruns_upstream_and_downstream(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    cache.run_stage(g, cfg, "t_down")
    up_key, down_key = g.stage_key(cfg, "t_up"), g.stage_key(cfg, "t_down")
    cfg2 = _cfg(tmp_path, f"pseudo.rounds={cfg.pseudo.rounds + 1}")
    assert g.stage_key(cfg2, "t_up") != up_key
    assert g.stage_key(cfg2, "t_down") != down_key  # upstream key is part of the downstream key
    _, ran = cache.run_stage(g, cfg2, "t_down")
    assert ran and dummies.calls == {"t_up": 2, "t_down": 2}


def test_seed_is_part_of_every_key(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    cfg2 = _cfg(tmp_path, "experiment.seed=7")
    for name in ("t_up", "t_down", "ingest", "folds"):
        assert g.stage_key(cfg, name) != g.stage_key(cfg2, name), name


def test_unrelated_change_keeps_keys(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    cfg2 = _cfg(tmp_path, "segment.train.epochs=1", "classify.enabled=false", "experiment.device=cpu")
    for name in ("t_up", "t_down", "ingest", "ingest_test", "folds"):
        assert g.stage_key(cfg, name) == g.stage_key(cfg2, name), name
    assert g.stage_key(cfg, "segment") != g.stage_key(cfg2, "segment")


def test_opt_in_switch_enters_the_key_only_when_on(tmp_path):
    cfg, on = _cfg(tmp_path, "ensemble.adabn=false"), _cfg(tmp_path, "ensemble.adabn=true")
    material = GRAPH.key_material(cfg, "ensemble")["config"]["ensemble"]
    assert "adabn" not in material and "models" in material  # off: hashed as before it existed
    assert GRAPH.key_material(on, "ensemble")["config"]["ensemble"]["adabn"] is True
    assert GRAPH.stage_key(cfg, "ensemble") != GRAPH.stage_key(on, "ensemble")
    assert GRAPH.stage_key(cfg, "segment") == GRAPH.stage_key(on, "segment")
    assert cfg.ensemble.adabn is False  # the config itself keeps the switch


def test_opt_in_switch_applies_to_every_stage_hashing_its_section(tmp_path):
    # The pseudo stage hashes the whole segment section: a switch registered once covers it too.
    off, on = _cfg(tmp_path), _cfg(tmp_path, "segment.model.decoder_attention=scse")
    for name in ("segment", "pseudo"):
        assert "decoder_attention" not in GRAPH.key_material(off, name)["config"]["segment"]["model"]
        assert GRAPH.key_material(on, name)["config"]["segment"]["model"]["decoder_attention"] == "scse"


def test_force_reruns(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_down")
    (folder / "stray.txt").write_text("left over")
    folder2, ran = cache.run_stage(g, cfg, "t_down", force=True)
    assert ran and folder2 == folder
    assert dummies.calls == {"t_up": 1, "t_down": 2}  # force applies to the named stage only
    assert not (folder / "stray.txt").exists()  # forced runs start from a clean folder
    assert cache.is_done(g, cfg, "t_down")
    _, ran = cache.run_stage(g, cfg, "t_up", force=True)
    assert ran and dummies.calls["t_up"] == 2


def test_failed_stage_leaves_no_manifest_and_reruns(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    dummies.fail_down = True
    with pytest.raises(RuntimeError, match="boom midway"):
        cache.run_stage(g, cfg, "t_down")
    folder = cache.stage_dir(g, cfg, "t_down")
    assert folder.is_dir() and (folder / "partial.txt").exists()
    assert not (folder / cache.MANIFEST).exists()
    assert cache.read_manifest(folder) is None
    assert not cache.is_done(g, cfg, "t_down")
    states = _states(cfg, g)
    assert states["t_down"] == "partial" and states["t_up"] == "done"
    with pytest.raises(FileNotFoundError, match="t_down"):
        cache.load_upstream(g, cfg, "t_down")

    dummies.fail_down = False
    folder2, ran = cache.run_stage(g, cfg, "t_down")
    assert ran and folder2 == folder
    assert dummies.calls == {"t_up": 1, "t_down": 2}
    assert dummies.seen_partial == [False, True]  # the rerun could resume from what was left
    assert _states(cfg, g)["t_down"] == "done"
    assert cache.load_upstream(g, cfg, "t_down") == folder


def test_corrupt_manifest_is_not_done(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    folder, _ = cache.run_stage(g, cfg, "t_up")
    (folder / cache.MANIFEST).write_text("{not json")
    assert _states(cfg, g)["t_up"] == "partial"
    assert cache.run_stage(g, cfg, "t_up")[1]
    assert dummies.calls["t_up"] == 2


def test_manifest_contents(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path, "pseudo.rounds=2")
    folder, _ = cache.run_stage(g, cfg, "t_down")
    up = json.loads((folder.parent / f"t_up-{g.stage_key(cfg, 't_up')}" / cache.MANIFEST).read_text())
    for field in ("stage", "key", "seed", "config", "versions", "timings", "metrics", "inputs", "upstream_keys"):
        assert field in up, field
    assert up["stage"] == "t_up"
    assert up["key"] == g.stage_key(cfg, "t_up")
    assert up["seed"] == cfg.experiment.seed == 42
    assert up["experiment"] == "demo"
    assert up["config_file"] == str(DEMO_CFG)
    assert up["config"] == {"pseudo.rounds": 2}
    assert up["metrics"] == {"rounds": 2, "score": 0.5}
    assert up["versions"]["python"] and "numpy" in up["versions"] and "torch" in up["versions"]
    assert up["timings"]["seconds"] >= 0 and up["timings"]["finished"]
    assert up["note"] == "from t_up"  # ctx.extra_manifest is merged in
    down = cache.read_manifest(folder)
    assert down["key"] == folder.name.split("-", 1)[1]
    assert down["metrics"] == {}  # fn returned None
    assert down["upstream_keys"] == {"t_up": up["key"]}
    assert down["inputs"]["upstream"] == {"t_up": str(folder.parent / f"t_up-{up['key']}")}
    # the resolved config is saved next to the manifest and loads back to the same values
    saved = (folder / "config.yaml").read_text()
    (tmp_path / "again.yaml").write_text(f"base: {REPO / 'configs' / 'base.yaml'}\n{saved}")
    again = config.load(tmp_path / "again.yaml")
    assert again == cfg


def test_status_done_stale_missing(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    states = _states(cfg, g)
    assert states["t_up"] == "missing" and states["t_down"] == "missing"
    assert states["segment"] == "missing"
    cache.run_stage(g, cfg, "t_down")
    states = _states(cfg, g)
    assert states["t_up"] == "done" and states["t_down"] == "done"
    assert states["segment"] == "missing"
    # the rows carry each stage's current key, in registration order
    rows = cache.status(g, cfg)
    assert [r[0] for r in rows] == list(g.stages)
    assert dict((r[0], r[2]) for r in rows)["t_down"] == g.stage_key(cfg, "t_down")

    cfg2 = _cfg(tmp_path, f"pseudo.epochs={cfg.pseudo.epochs + 1}")
    states = _states(cfg2, g)
    assert states["t_up"] == "done" and states["t_down"] == "stale"
    cfg3 = _cfg(tmp_path, f"pseudo.rounds={cfg.pseudo.rounds + 1}")
    states = _states(cfg3, g)
    assert states["t_up"] == "stale" and states["t_down"] == "stale"
    cache.run_stage(g, cfg3, "t_down")
    assert _states(cfg3, g)["t_down"] == "done"
    assert _states(cfg2, g)["t_down"] == "stale"  # still not run at that key
    # another experiment name is another folder: nothing of it exists yet
    states = _states(_cfg(tmp_path, "experiment.name=other"), g)
    assert states["t_up"] == "missing" and states["t_down"] == "missing"


def test_partial_old_folder_is_not_stale(tmp_path, dummies):
    g = dummies.graph
    cfg = _cfg(tmp_path)
    dummies.fail_down = True
    with pytest.raises(RuntimeError):
        cache.run_stage(g, cfg, "t_down")
    cfg2 = _cfg(tmp_path, f"pseudo.epochs={cfg.pseudo.epochs + 1}")
    assert _states(cfg2, g)["t_down"] == "missing"


def test_unknown_stage(tmp_path):
    with pytest.raises(KeyError, match="unknown stage"):
        GRAPH.get("nope")
    with pytest.raises(KeyError):
        GRAPH.stage_key(_cfg(tmp_path), "nope")


# ----------------------------------------------------------------------------- real stages


def test_real_stages_run_and_cache(tmp_path, tiny_data):
    cfg = _cfg(tmp_path, data=tiny_data)
    assert _states(cfg)["folds"] == "missing"
    folder, ran = cache.run_stage(GRAPH, cfg, "folds")
    assert ran
    ingest_dir = cache.stage_dir(GRAPH, cfg, "ingest")
    assert cache.is_done(GRAPH, cfg, "ingest") and (ingest_dir / "train.csv").exists()
    folds = pd.read_csv(folder / "folds.csv", dtype={"id": str})
    train = pd.read_csv(ingest_dir / "train.csv", dtype={"id": str})
    assert len(folds) == len(train) == N_TRAIN
    assert list(folds["id"]) == list(train["id"])
    assert set(folds["fold"]) == set(range(cfg.folds.n_folds))
    manifest = cache.read_manifest(folder)
    assert sum(manifest["metrics"]["fold_sizes"]) == N_TRAIN
    assert manifest["upstream_keys"] == {"ingest": GRAPH.stage_key(cfg, "ingest")}
    # the manifest records what the key hashes: the folds section, less opt-in switches that are off
    off = ("mosaic", "clusters", "duplicates", "stratify")
    hashed = {k: v for k, v in typed.section(cfg, "folds").items() if k not in off}
    assert manifest["config"] == {"folds": hashed}
    assert "mosaic:" in (folder / "config.yaml").read_text()  # the resolved config keeps everything
    assert cache.read_manifest(ingest_dir)["inputs"]["files"]  # external files fingerprinted

    states = _states(cfg)
    assert states["ingest"] == "done" and states["folds"] == "done"
    assert states["ingest_test"] == "missing" and states["segment"] == "missing"
    assert not cache.run_stage(GRAPH, cfg, "folds")[1]
    assert not cache.run_stage(GRAPH, cfg, "ingest")[1]

    # a folds-only change reruns folds against the cached ingest
    cfg2 = _cfg(tmp_path, "folds.n_folds=4", data=tiny_data)
    assert GRAPH.stage_key(cfg2, "ingest") == GRAPH.stage_key(cfg, "ingest")
    assert GRAPH.stage_key(cfg2, "folds") != GRAPH.stage_key(cfg, "folds")
    assert _states(cfg2)["folds"] == "stale"
    ingest_mtime = (ingest_dir / cache.MANIFEST).stat().st_mtime_ns
    folder2, ran = cache.run_stage(GRAPH, cfg2, "folds")
    assert ran and folder2 != folder
    assert (ingest_dir / cache.MANIFEST).stat().st_mtime_ns == ingest_mtime
    assert set(pd.read_csv(folder2 / "folds.csv")["fold"]) == set(range(4))


def test_test_images_change_keeps_folds_key(tmp_path, tiny_data):
    cfg = _cfg(tmp_path, data=tiny_data)
    cache.run_stage(GRAPH, cfg, "folds")
    cache.run_stage(GRAPH, cfg, "ingest_test")
    other = tmp_path / "other_test"
    shutil.copytree(tiny_data / "test" / "images", other)
    (other / sorted(os.listdir(other))[0]).unlink()  # a different test set: one image fewer
    cfg2 = _cfg(tmp_path, f"data.test_images={other}", data=tiny_data)
    for name in ("ingest", "folds", "segment", "classify"):
        assert GRAPH.stage_key(cfg2, name) == GRAPH.stage_key(cfg, name), name
    for name in ("ingest_test", "pseudo", "ensemble", "submit"):
        assert GRAPH.stage_key(cfg2, name) != GRAPH.stage_key(cfg, name), name
    states = _states(cfg2)
    assert states["ingest"] == "done" and states["folds"] == "done" and states["ingest_test"] == "stale"
    assert not cache.run_stage(GRAPH, cfg2, "folds")[1]
    folder, ran = cache.run_stage(GRAPH, cfg2, "ingest_test")
    assert ran
    assert len(pd.read_csv(folder / "test.csv")) == N_TEST - 1
    assert _states(cfg2)["ingest_test"] == "done"


def _folds_on_a_copy(tmp_path, tiny_data):
    """Folds run on a copy of the tiny data: (data folder, keys of ingest, ingest_test, folds)."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    cfg = _cfg(tmp_path, data=data)
    cache.run_stage(GRAPH, cfg, "folds")
    return data, {n: GRAPH.stage_key(cfg, n) for n in ("ingest", "ingest_test", "folds")}


def test_input_content_change_invalidates_ingest_and_downstream(tmp_path, tiny_data):
    data, keys = _folds_on_a_copy(tmp_path, tiny_data)
    meta = data / "metadata.csv"
    st = meta.stat()
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched, same bytes
    assert {n: GRAPH.stage_key(_cfg(tmp_path, data=data), n) for n in keys} == keys
    meta.write_text(meta.read_text() + "\n")  # new content
    cfg2 = _cfg(tmp_path, data=data)
    for name, key in keys.items():
        assert GRAPH.stage_key(cfg2, name) != key, name
    states = _states(cfg2)
    assert states["ingest"] == "stale" and states["folds"] == "stale"
    _, ran = cache.run_stage(GRAPH, cfg2, "folds")
    assert ran and cache.is_done(GRAPH, cfg2, "ingest")


def test_recopied_data_keeps_its_artifacts(tmp_path, tiny_data):
    # A dataset copied again (new mtimes, same bytes) must not retrain every stage.
    data, keys = _folds_on_a_copy(tmp_path, tiny_data)
    shutil.rmtree(data)
    shutil.copytree(tiny_data, data, copy_function=shutil.copy)  # copy: fresh mtimes
    cfg2 = _cfg(tmp_path, data=data)
    assert {n: GRAPH.stage_key(cfg2, n) for n in keys} == keys
    assert not cache.run_stage(GRAPH, cfg2, "folds")[1]


def test_ingest_error_leaves_nothing(tmp_path, tiny_data):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    mask = sorted((data / "train" / "masks").iterdir())[0]
    mask.unlink()  # an image without its mask
    cfg = _cfg(tmp_path, data=data)
    with pytest.raises(IngestError) as info:
        cache.run_stage(GRAPH, cfg, "folds")
    assert mask.stem in str(info.value)
    assert not cache.stage_dir(GRAPH, cfg, "ingest").exists()
    assert _states(cfg)["ingest"] == "missing"

"""The offline bundle: built from the smoke run's artifacts, its predict.py, run in a fresh
process that cannot see this checkout, writes the pipeline's own submission byte for byte."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import api
from pipeline.bundle import build as bundle
from pipeline.bundle import code as bundle_code
from pipeline.bundle import planner
from pipeline.core import paths
from pipeline.core.errors import UserError
from pipeline.core.store import ArrayStore, map_of
from pipeline.engine import cache
from pipeline.neighbours.mosaic_context import Mosaic
from pipeline.stages import GRAPH

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(smoke_cfg, tmp_path_factory):
    """finished(*overrides): the smoke config (an ensemble of segment + pseudo) with every
    stage run; overrides of the scorer rerun only the scorer and the submission."""
    root = tmp_path_factory.mktemp("bundle_root")

    def make(*overrides: str):
        cfg = smoke_cfg(*overrides, artifacts=root / "artifacts")
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(paths, "SUBMISSIONS_DIR", root / "submissions")
            mp.setattr(paths, "REPO_ROOT", root)
            for name in GRAPH.stages:
                cache.run_stage(GRAPH, cfg, name)
        return cfg

    return make


@pytest.fixture(scope="module")
def done(finished):
    return finished()


def _predict(bundle_dir: Path, smoke_data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """predict.py as a competitor runs it: from another folder, no PYTHONPATH, this checkout
    out of reach (-I: no user site, no environment variables)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    cmd = [sys.executable, "-I", str(bundle_dir / "predict.py"), "--images", str(smoke_data / "test" / "images"), "--out", str(out)]
    cmd += ["--metadata", str(smoke_data / "metadata.csv"), *extra]
    return subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("policy", ["auto", "grid", "per_image", "none"])
def test_bundle_reproduces_the_submission(finished, smoke_data, tmp_path, policy):
    cfg = finished(f"scorer.policy={policy}")
    out = tmp_path / "bundle"
    manifest = api.bundle(cfg, out)
    assert bundle.verify(out) == []
    plan = json.loads((out / "bundle.json").read_text())
    assert list(plan["models"]) == ["segment", "pseudo"]
    assert sum(m["weight"] for m in plan["models"].values()) == pytest.approx(1.0)
    assert not any(bundle_code.is_training(m) for m in manifest["modules"])
    assert "torch" in (out / "requirements.txt").read_text()
    assert not any(p.suffix == ".pkl" for p in out.rglob("*"))

    work = tmp_path / "elsewhere"
    work.mkdir()
    res = _predict(out, smoke_data, work / "submission.csv")
    assert res.returncode == 0, res.stderr[-2000:]
    expected = (api.artifact(cfg, "submit") / "submission.csv").read_bytes()
    assert (work / "submission.csv").read_bytes() == expected
    assert not list(out.rglob("__pycache__")), "predict.py wrote into the bundle"
    assert (plan["policy"]["fixed"] is None) == (plan["policy"]["name"] in ("global", "per_image"))


ZOO = (
    "segment.models={fpn: {model: {arch: FPN}}, student: {input: {size: 64}}}",
    "distill.enabled=true",
    "distill.teachers=[segment, fpn]",
    "distill.student=student",
    "pseudo.rounds=0",
)


@pytest.mark.parametrize("entries", ["[segment, fpn]", "[distill]"])
def test_bundle_reproduces_a_zoo_blend_and_its_student(finished, smoke_data, tmp_path, entries):
    """A blend of zoo members, and the distilled student alone: each model is rebuilt in the
    bundle by its own segment section (the model contract) and the submission is the pipeline's."""
    cfg = finished(*ZOO, f"ensemble.models={entries}")
    out = tmp_path / "bundle"
    api.bundle(cfg, out)
    plan = json.loads((out / "bundle.json").read_text())
    archs = {name: m["segment"]["model"]["arch"] for name, m in plan["models"].items()}
    sizes = {name: m["segment"]["input"]["size"] for name, m in plan["models"].items()}
    if entries == "[distill]":
        assert list(plan["models"]) == ["distill"] and sizes["distill"] == 64
    else:
        assert archs["fpn"] == "FPN" and archs["segment"] != "FPN"
    res = _predict(out, smoke_data, tmp_path / "submission.csv")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "submission.csv").read_bytes() == (api.artifact(cfg, "submit") / "submission.csv").read_bytes()
    # The planner's choice written into the bundle keeps each model's own section.
    api.plan(cfg, "10h", bundle_dir=out)
    replanned = json.loads((out / "bundle.json").read_text())["models"]
    assert all(m["segment"] == plan["models"][name]["segment"] for name, m in replanned.items())


def test_bundle_reproduces_a_model_with_mosaic_context(finished, smoke_data, tmp_path):
    """A model trained on tiles grown with their neighbours' pixels: the bundle carries the
    train tiles, predict.py searches them and the test tiles together as the mosaic stage did,
    and writes the pipeline's submission."""
    cfg = finished("pseudo.rounds=0", "ensemble.models=[segment]", "segment.context.enabled=true", "segment.context.margin=10")
    assert cache.read_manifest(api.artifact(cfg, "mosaic"))["metrics"]["test_with_neighbour"] > 0
    out = tmp_path / "bundle"
    api.bundle(cfg, out)
    plan = json.loads((out / "bundle.json").read_text())
    assert plan["context"]["ratio"] == cfg.segment.context.ratio and (out / "context" / "images.u8").exists()
    assert plan["models"]["segment"]["segment"]["context"]["enabled"] is True
    res = _predict(out, smoke_data, tmp_path / "submission.csv")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "submission.csv").read_bytes() == (api.artifact(cfg, "submit") / "submission.csv").read_bytes()
    # The planner scores the model on grown tiles, as it trained and predicts: its OOF maps of
    # the two views average to the segment stage's own OOF maps (up to rounding; plain tiles fail).
    assert len(api.plan(cfg, "10h")[0]) > 0
    src, test = api.bundle_sources(cfg), ArrayStore(api.artifact(cfg, "ingest_test"), "test_images")
    mosaic = Mosaic.open(api.artifact(cfg, "mosaic"), test, ArrayStore(src.ingest, "images"))
    measured = planner.measure(cfg, src.models, (src.ingest, src.folds), test, [], mosaic)
    stored, views = ArrayStore(api.artifact(cfg, "segment"), "oof"), measured.oof["segment"]
    worst = max(np.abs((views["none"][r] + views["hflip"][r]) / 2 - map_of(stored.get(i))).max() for r, i in enumerate(measured.ids))
    assert worst < 0.01


def test_bundle_reproduces_tiles_seg_head_adabn_and_sample_order(finished, smoke_data, tmp_path):
    """Tile mode (sliding window), the classifier as a head of the segmentation model, AdaBN on
    the test images, and a sample submission that fixes another order of the ids."""
    ids = sorted(p.stem for p in (smoke_data / "test" / "images").iterdir())[::-1]
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"id": ids, "rle_mask": ""}).to_csv(sample, index=False)
    cfg = finished(
        "segment.input.mode=tile",
        "segment.input.size=64",
        "classify.source=seg_head",
        "ensemble.adabn=true",
        "pseudo.rounds=0",
        "ensemble.models=[segment]",
        f"data.sample_submission={sample}",
    )
    out = tmp_path / "bundle"
    api.bundle(cfg, out)
    assert json.loads((out / "bundle.json").read_text())["classifier"] == []
    res = _predict(out, smoke_data, tmp_path / "submission.csv", "--sample-submission", str(sample))
    assert res.returncode == 0, res.stderr[-2000:]
    expected = (api.artifact(cfg, "submit") / "submission.csv").read_bytes()
    assert (tmp_path / "submission.csv").read_bytes() == expected
    assert pd.read_csv(tmp_path / "submission.csv", dtype=str)["id"].tolist() == ids


def test_a_policy_reading_metadata_needs_it(finished, smoke_data, tmp_path):
    cfg = finished("scorer.policy=per_image")
    out = tmp_path / "bundle"
    api.bundle(cfg, out)
    assert any(c.startswith("meta_") for c in json.loads((out / "bundle.json").read_text())["policy"]["features"])
    cmd = [sys.executable, "-I", str(out / "predict.py"), "--images", str(smoke_data / "test" / "images"), "--out", str(tmp_path / "s.csv")]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "meta_" in res.stderr and "--metadata" in res.stderr
    assert not (tmp_path / "s.csv").exists()


def test_bundle_runs_its_own_modules(done, tmp_path):
    out = tmp_path / "bundle"
    api.bundle(done, out)
    code = f"import sys; sys.path.insert(0, {str(out)!r}); import pipeline.bundle.offline as o, pipeline.inference.fold_models; print(o.__file__)"
    res = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().startswith(str(out))
    res = subprocess.run(
        [sys.executable, "-I", "-c", code.replace("pipeline.inference.fold_models", "pipeline.training.loop")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode != 0 and "No module named 'pipeline.training" in res.stderr


def test_bundle_refuses_a_folder_in_use_and_leaves_nothing_half_written(done, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "x").write_text("keep")
    with pytest.raises(UserError, match="exists and is not empty"):
        api.bundle(done, out)
    assert [p.name for p in out.iterdir()] == ["x"]


def test_a_tampered_file_fails_verification(done, tmp_path):
    out = tmp_path / "bundle"
    api.bundle(done, out)
    (out / "config.yaml").write_text((out / "config.yaml").read_text() + "\n")
    assert bundle.verify(out) == [f"{out / 'config.yaml'}: differs from the manifest"]


def test_predict_py_says_what_is_missing(done, smoke_data, tmp_path):
    out = tmp_path / "bundle"
    api.bundle(done, out)
    res = _predict(out, smoke_data, tmp_path / "s.csv", "--images", str(tmp_path / "nowhere"))
    assert res.returncode == 2
    assert "nowhere" in res.stderr and not (tmp_path / "s.csv").exists()


def test_torchscript_bundle_matches_the_eager_models(done, smoke_data, tmp_path):
    out = tmp_path / "bundle_ts"
    manifest = api.bundle(done, out, export="torchscript")
    plan = json.loads((out / "bundle.json").read_text())
    files = [f for m in plan["models"].values() for f in m["folds"]] + plan["classifier"]
    assert files and all(f.endswith(".ts") for f in files)
    assert not list(out.rglob("*.pt"))
    diffs = plan["export"]["max_abs_diff"]
    assert set(diffs) == set(files) and max(max(d.values()) for d in diffs.values()) <= 0.02
    assert manifest["export"]["kind"] == "torchscript"
    res = _predict(out, smoke_data, tmp_path / "sub.csv")
    assert res.returncode == 0, res.stderr[-2000:]
    _close_to_the_pipeline(tmp_path / "sub.csv", done)


def _close_to_the_pipeline(path: Path, cfg) -> None:
    """Same ids in the same order, and most masks identical: an exported graph computes in
    another order (or precision), which moves a few pixels across a threshold."""
    got = pd.read_csv(path, keep_default_na=False)
    want = pd.read_csv(api.artifact(cfg, "submit") / "submission.csv", keep_default_na=False)
    assert got.iloc[:, 0].tolist() == want.iloc[:, 0].tolist()
    assert (got.iloc[:, 1] == want.iloc[:, 1]).mean() >= 0.75


def test_export_refuses_adabn(smoke_cfg, tmp_path):
    from pipeline.bundle.export import export_models

    with pytest.raises(UserError, match="adabn"):
        export_models(smoke_cfg("ensemble.adabn=true"), {}, tmp_path, "torchscript", tmp_path)


def test_planner_table_and_choice_within_the_budget(done, smoke_data, tmp_path):
    plans, pick = api.plan(done, "1000h")
    # 3 model subsets (segment, pseudo, both) x 7 view subsets x 2 fold counts
    assert len(plans) == 3 * 7 * 2
    assert pick["oof"] == plans["oof"].max() and pick["folds"] == 2
    configured = plans[(plans["models"] == "segment+pseudo") & (plans["views"] == "+".join(done.segment.train.tta))]
    assert len(configured) == 2 and (configured["vs_config"] == 0).all() and (configured["se"] == 0).all()
    # A budget just above the cheapest choice can only afford it.
    cheapest = plans["seconds"].min()
    assert planner.choose(plans, cheapest * 1.01)["seconds"] <= cheapest * 1.01
    with pytest.raises(UserError, match="nothing fits"):
        planner.choose(plans, cheapest / 2)


def test_planner_time_model_and_written_choice(done, smoke_data, tmp_path):
    src = api.bundle_sources(done)
    test = ArrayStore(api.artifact(done, "ingest_test"), "test_images")
    classifier = sorted(src.classify.glob("fold*/model.pt"))
    measured = planner.measure(done, src.models, (src.ingest, src.folds), test, classifier)
    assert measured.fixed_seconds > 0  # the smoke config's separate classifier
    plans = planner.table(measured, len(test), False, ["none"]).set_index(["models", "views", "folds"])["seconds"]
    fixed = measured.fixed_seconds * len(test)
    one, two = plans[("segment", "none", 1)], plans[("segment", "none", 2)]
    assert two - fixed == pytest.approx(2 * (one - fixed))
    assert plans[("segment", "none+hflip", 1)] - fixed == pytest.approx(one - fixed + measured.seconds["segment"]["hflip"] * len(test))

    out = tmp_path / "bundle"
    api.bundle(done, out)
    small = pd.Series({"models": "segment", "views": "hflip", "folds": 1, "seconds": 1.0, "oof": 0.5})
    bundle.replan(out, done, measured, small, {"budget_s": 1.0, "device": "cpu"})
    plan = json.loads((out / "bundle.json").read_text())
    assert list(plan["models"]) == ["segment"] and plan["tta"] == ["hflip"]
    assert len(plan["models"]["segment"]["folds"]) == 1 and plan["models"]["segment"]["weight"] == 1.0
    assert plan["planner"]["budget_s"] == 1.0 and bundle.verify(out) == []
    res = _predict(out, smoke_data, tmp_path / "planned.csv")
    assert res.returncode == 0, res.stderr[-2000:]


def test_onnx_bundle_matches_the_eager_models_and_needs_onnxruntime(done, smoke_data, tmp_path):
    out = tmp_path / "bundle_onnx"
    api.bundle(done, out, export="onnx")
    plan = json.loads((out / "bundle.json").read_text())
    files = [f for m in plan["models"].values() for f in m["folds"]] + plan["classifier"]
    assert files and all(f.endswith(".onnx") for f in files) and not list(out.rglob("*.pt"))
    assert max(max(d.values()) for d in plan["export"]["max_abs_diff"].values()) <= 0.02
    assert "onnxruntime==" in (out / "requirements.txt").read_text()
    res = _predict(out, smoke_data, tmp_path / "sub.csv")
    assert res.returncode == 0, res.stderr[-2000:]
    _close_to_the_pipeline(tmp_path / "sub.csv", done)


def test_plain_bundles_do_not_require_onnxruntime(done, tmp_path):
    api.bundle(done, tmp_path / "b")
    assert "onnxruntime" not in (tmp_path / "b" / "requirements.txt").read_text()

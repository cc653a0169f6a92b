"""Several segmentation models in one experiment (pipeline/config/zoo.py): config checks, one key per
model (equal to a one-model experiment's), each model trained once and reused when only the
blend changes, each predicted by its own config."""

from __future__ import annotations

import pytest

from pipeline.config import zoo
from pipeline.core.errors import ConfigError, UserError
from pipeline.engine import cache
from pipeline.stages import GRAPH

FPN = "segment.models={fpn: {model: {arch: FPN}}, small: {input: {size: 64}}}"


def test_zoo_config_problems(smoke_cfg):
    with pytest.raises(ConfigError, match=r"unknown key 'segment\.models\.fpn\.model\.archh'"):
        smoke_cfg("segment.models={fpn: {model: {archh: FPN}}}")
    with pytest.raises(ConfigError, match=r"segment\.models\.fpn\.model\.arch: got 'FPNN'"):
        smoke_cfg("segment.models={fpn: {model: {arch: FPNN}}}")
    with pytest.raises(ConfigError, match=r"segment\.models\.small\.input\.size: got 60, must be a multiple of 32"):
        smoke_cfg("segment.models={small: {input: {size: 60}}}")
    with pytest.raises(ConfigError, match=r"ensemble\.models\[1\]: got 'fpm', which names no model; valid entries: segment, pseudo, fpn"):
        smoke_cfg(FPN, "ensemble.models=[segment, fpm]")
    with pytest.raises(ConfigError, match=r"segment\.models\.pseudo: a model name"):
        smoke_cfg("segment.models={pseudo: {}}")
    with pytest.raises(ConfigError, match=r"pseudo\.rounds: got 0"):
        smoke_cfg(FPN, "pseudo.rounds=0", "ensemble.models=[segment, pseudo:fpn]")
    with pytest.raises(UserError, match="--model fpm: not a model of this config"):
        zoo.model_cfg(smoke_cfg(FPN), "fpm")


def test_each_model_has_the_key_of_a_one_model_experiment(smoke_cfg, tmp_path):
    plain = smoke_cfg(artifacts=tmp_path)
    zoo_cfg = smoke_cfg(FPN, "ensemble.models=[segment, fpn, pseudo:small]", artifacts=tmp_path)
    alone = smoke_cfg("segment.model.arch=FPN", artifacts=tmp_path)
    # The segment section is model `segment`: a zoo beside it leaves its key (and its pseudo's).
    for stage in ("segment", "pseudo", "classify"):
        assert GRAPH.stage_key(zoo_cfg, stage) == GRAPH.stage_key(plain, stage)
    assert GRAPH.stage_key(zoo.model_cfg(zoo_cfg, "fpn"), "segment") == GRAPH.stage_key(alone, "segment")
    # Editing one model changes no other model's key, and every blend that reads it.
    edited = smoke_cfg(FPN.replace("size: 64", "size: 96"), "ensemble.models=[segment, fpn, pseudo:small]", artifacts=tmp_path)
    assert GRAPH.stage_key(zoo.model_cfg(edited, "fpn"), "segment") == GRAPH.stage_key(zoo.model_cfg(zoo_cfg, "fpn"), "segment")
    assert GRAPH.stage_key(zoo.model_cfg(edited, "small"), "segment") != GRAPH.stage_key(zoo.model_cfg(zoo_cfg, "small"), "segment")
    assert GRAPH.stage_key(edited, "ensemble") != GRAPH.stage_key(zoo_cfg, "ensemble")
    # A zoo that the blend does not name leaves the blend's key.
    assert GRAPH.stage_key(smoke_cfg(FPN, artifacts=tmp_path), "ensemble") == GRAPH.stage_key(plain, "ensemble")


def test_entries_parse_to_stage_and_model():
    assert zoo.parse("segment") == ("segment", "segment")
    assert zoo.parse("pseudo") == ("pseudo", "segment")
    assert zoo.parse("fpn") == ("segment", "fpn")
    assert zoo.parse("pseudo:fpn") == ("pseudo", "fpn")


@pytest.mark.slow
def test_two_models_train_once_and_are_reused_when_only_the_blend_changes(smoke_cfg, tmp_path):
    common = ["pseudo.rounds=0", "classify.enabled=false", "segment.models={fpn: {model: {arch: FPN}}}"]
    first = smoke_cfg(*common, "ensemble.models=[segment, fpn]", artifacts=tmp_path)
    folder, ran = cache.run_stage(GRAPH, first, "ensemble")
    assert ran
    seg_dirs = sorted((folder.parent).glob("segment-*[!k]"))
    assert len(seg_dirs) == 2  # one artifact per model
    stamps = {d: (d / "manifest.json").stat().st_mtime_ns for d in seg_dirs}
    fpn_dir = cache.stage_dir(GRAPH, zoo.model_cfg(first, "fpn"), "segment")
    assert fpn_dir in stamps and cache.read_manifest(fpn_dir)["config"]["segment"]["model"]["arch"] == "FPN"
    metrics = cache.read_manifest(folder)["metrics"]
    assert set(metrics["oof_tgs_per_model"]) == {"segment", "fpn"} and metrics["blend_gain"]["over"] in {"segment", "fpn"}
    # Only the blend changes: both models are read from cache, neither retrains.
    second = smoke_cfg(*common, "ensemble.models=[fpn, segment]", "ensemble.fit_weights=false", artifacts=tmp_path)
    folder2, ran2 = cache.run_stage(GRAPH, second, "ensemble")
    assert ran2 and folder2 != folder
    assert {d: (d / "manifest.json").stat().st_mtime_ns for d in seg_dirs} == stamps
    assert sorted(folder.parent.glob("segment-*[!k]")) == seg_dirs


def test_each_fitted_model_is_built_by_its_own_section(smoke_cfg, tmp_path):
    """The model contract: a zoo member carries its own segment section (FPN here), and a
    bundle plan's entry rebuilds the same config (pipeline/inference/contract.py)."""
    from pipeline.inference.contract import FittedModel, fitted_models

    cfg = smoke_cfg(FPN, "ensemble.models=[segment, fpn]")
    folders = {}
    for name in ("segment", "fpn"):
        (tmp_path / name / "fold0").mkdir(parents=True)
        (tmp_path / name / "fold0" / "model.pt").write_bytes(b"")
        folders[name] = tmp_path / name
    models = fitted_models(cfg, folders)
    assert models["fpn"].cfg.segment.model.arch == "FPN" and models["segment"].cfg.segment.model.arch != "FPN"
    assert models["fpn"].folds == (tmp_path / "fpn" / "fold0" / "model.pt",)
    entry = models["fpn"].to_plan(["models/fpn/fold0.pt"], 0.5)
    back = FittedModel.from_plan("fpn", entry, cfg, tmp_path)
    assert back.cfg.segment == models["fpn"].cfg.segment and back.folds == (tmp_path / "models/fpn/fold0.pt",)
    assert back.outputs == models["fpn"].outputs and back.context is None
    old = FittedModel.from_plan("segment", {"weight": 1.0, "folds": []}, cfg, tmp_path)  # a bundle from before the contract
    assert old.cfg.segment == cfg.segment

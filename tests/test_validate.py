"""Value checks at config load: every bad value fails in `config.load`, before any stage runs,
with one line naming the key, the value and what is valid."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import fields, typed
from pipeline.config import loader as config
from pipeline.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "demo.yaml"  # 3 folds, resize 64, ensemble [segment, pseudo], 1 pseudo round

WEIGHTS = ["imagenet", "lite", "null"]
ARCHS = ["Unet", "UnetPlusPlus", "FPN", "Linknet", "MAnet", "PAN", "DeepLabV3Plus", "PSPNet", "UPerNet", "Segformer"]
LOSSES = ["bce", "dice", "lovasz", "focal", "jaccard", "tversky"]
BINS = ["empty", "small", "medium", "large"]


def _message(overrides: list[str]) -> str:
    with pytest.raises(UserError) as info:
        config.load(DEMO, overrides)
    return str(info.value)


def _one_line(overrides: list[str], key: str, *words: str) -> str:
    msg = _message(overrides)
    assert "\n" not in msg, f"one bad value, one line: {msg!r}"
    assert msg.startswith(f"{key}:"), (key, msg)
    for word in words:
        assert word in msg, (word, msg)
    return msg


# ----------------------------------------------------------------------------- enumerations


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ("scorer.policy=best", "scorer.policy", ["'best'", "auto", "none", "grid", "global", "per_image"]),
        ("ensemble.models=[segment, boost]", "ensemble.models[1]", ["'boost'", "segment", "pseudo"]),
        ("ensemble.models=[]", "ensemble.models", ["[]", "empty"]),
        ("ensemble.models=[segment, segment]", "ensemble.models", ["'segment'", "twice"]),
        ("submit.metric=map", "submit.metric", ["'map'", "tgs", "dice", "iou"]),
        ("segment.model.arch=UNet", "segment.model.arch", ["'UNet'", *ARCHS]),
        ("classify.source=both", "classify.source", ["'both'", "separate", "seg_head"]),
        ("segment.input.mode=crop", "segment.input.mode", ["'crop'", "pad", "resize", "tile"]),
        ("classify.input.mode=crop", "classify.input.mode", ["'crop'", "pad", "resize", "tile"]),
        ("segment.model.encoder_weights=ssl", "segment.model.encoder_weights", ["'ssl'", *WEIGHTS]),
        ("classify.model.encoder_weights=ssl", "classify.model.encoder_weights", ["'ssl'", *WEIGHTS]),
        ("segment.model.decoder_attention=cbam", "segment.model", ["cbam", "scse", "null"]),
        ("classify.model.decoder_attention=scse", "classify.model.decoder_attention", ["'scse'", "null"]),
        ("experiment.device=tpu", "experiment.device", ["'tpu'", "auto", "cpu", "cuda"]),
        ("data.channels=rgb", "data", ["channels", "rgb", "auto", "1", "3"]),
        ("segment.train.bf16=maybe", "segment.train.bf16", ["'maybe'", "auto", "on", "off"]),
        ("classify.train.bf16=maybe", "classify.train.bf16", ["'maybe'", "auto", "on", "off"]),
        ("segment.train.scheduler=step", "segment.train.scheduler", ["'step'", "cosine", "cosine_restarts", "onecycle", "none"]),
        # one loss phase: classify's cosine_restarts would be plain cosine, and it has no `loss`
        ("classify.train.scheduler=cosine_restarts", "classify.train.scheduler", ["'cosine_restarts'", "cosine", "onecycle", "none"]),
        ("segment.train.tta=[none, rot90]", "segment.train.tta[1]", ["'rot90'", "none", "hflip", "vflip"]),
        ("classify.train.tta=[flip]", "classify.train.tta[0]", ["'flip'", "none", "hflip", "vflip"]),
        ("segment.train.oversample={tiny: 2}", "segment.train.oversample", ["'tiny'", *BINS]),
        ("classify.train.oversample={huge: 2}", "classify.train.oversample", ["'huge'", *BINS]),
        ("segment.train.loss=[{until_epoch: 0, terms: {bce2: 1}}]", "segment.train.loss[0].terms", ["'bce2'", *LOSSES]),
        ("classify.patch.aggregate=mean", "classify.patch.aggregate", ["'mean'", "weighted", "max"]),
    ],
)
def test_enumerated_value(override, key, words):
    _one_line([override], key, *words)


def test_classify_cosine_restarts_refused_when_segment_uses_it():
    _one_line(["segment.train.scheduler=cosine_restarts", "classify.train.scheduler=cosine_restarts"], "classify.train.scheduler")


# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["segment.train.epochs=0"], "segment.train.epochs", ["0", ">= 1"]),
        (["classify.train.epochs=0"], "classify.train.epochs", ["0", ">= 1"]),
        (["pseudo.epochs=0"], "pseudo.epochs", ["0", ">= 1"]),
        (["segment.train.batch_size=0"], "segment.train.batch_size", ["0", ">= 1"]),
        (["classify.train.batch_size=-4"], "classify.train.batch_size", ["-4", ">= 1"]),
        (["segment.train.folds=[0, 3]"], "segment.train.folds[1]", ["3", "[0, 2]", "folds.n_folds"]),
        (["classify.train.folds=[-1]"], "classify.train.folds[0]", ["-1", "[0, 2]", "folds.n_folds"]),
        (["segment.train.folds=[1, 1]"], "segment.train.folds", ["1", "twice"]),
        (["segment.input.mode=pad", "segment.input.size=100"], "segment.input.size", ["100", "multiple of 32"]),
        (["classify.input.mode=pad", "classify.input.size=100"], "classify.input.size", ["100", "multiple of 32"]),
        # smp's encoders need a side divisible by their output stride (2^depth) in every mode
        (["segment.input.size=80"], "segment.input.size", ["80", "multiple of 32"]),
        (["segment.input.mode=tile", "segment.input.tile_overlap=64"], "segment.input.tile_overlap", ["64", "[0, 63]"]),
        (["segment.input.tile_overlap=-1"], "segment.input.tile_overlap", ["-1", ">= 0"]),
        (["pseudo.rounds=0"], "pseudo.rounds", ["0", ">= 1", "ensemble.models", "pseudo"]),
        (["pseudo.rounds=-1", "ensemble.models=[segment]"], "pseudo.rounds", ["-1", ">= 0"]),
        (["pseudo.prob_lo=1.5"], "pseudo.prob_lo", ["1.5", "[0, 1]"]),
        (["pseudo.prob_hi=-0.1"], "pseudo.prob_hi", ["-0.1", "[0, 1]"]),
        (["pseudo.pixel_lo=2"], "pseudo.pixel_lo", ["2", "[0, 1]"]),
        (["pseudo.pixel_hi=2"], "pseudo.pixel_hi", ["2", "[0, 1]"]),
        (["pseudo.min_confident_share=1.2"], "pseudo.min_confident_share", ["1.2", "[0, 1]"]),
        (["pseudo.max_images=-1"], "pseudo.max_images", ["-1", ">= 0"]),
        (["scorer.thresholds=[0.5, 1.5]"], "scorer.thresholds[1]", ["1.5", "[0, 1]"]),
        (["scorer.thresholds=[]"], "scorer.thresholds", ["[]", "empty"]),
        (["scorer.gates=[-0.1]"], "scorer.gates[0]", ["-0.1", "[0, 1]"]),
        (["scorer.min_areas=[0, -5]"], "scorer.min_areas[1]", ["-5", ">= 0"]),
        (["segment.train.eval_threshold=2"], "segment.train.eval_threshold", ["2", "[0, 1]"]),
        (["classify.patch.second_round_conf=1.5"], "classify.patch.second_round_conf", ["1.5", "[0, 1]"]),
        (["segment.model.dropout=1"], "segment.model.dropout", ["1", "[0, 1)"]),
        (["classify.model.dropout=-0.1"], "classify.model.dropout", ["-0.1", "[0, 1)"]),
        (["segment.model.encoder_depth=6"], "segment.model.encoder_depth", ["6", "[1, 5]"]),
        (["segment.train.lr=0"], "segment.train.lr", ["0", "> 0"]),
        (["classify.train.swa_lr=-1"], "classify.train.swa_lr", ["-1", "> 0"]),
        (["segment.train.weight_decay=-1"], "segment.train.weight_decay", ["-1", ">= 0"]),
        (["segment.train.swa_epochs=-1"], "segment.train.swa_epochs", ["-1", ">= 0"]),
        (["segment.train.num_workers=-1"], "segment.train.num_workers", ["-1", ">= 0"]),
        (["classify.train.max_images=-1"], "classify.train.max_images", ["-1", ">= 0"]),
        (["segment.train.oversample={small: -1}"], "segment.train.oversample.small", ["-1", ">= 0"]),
        (["segment.train.loss=[{until_epoch: -1, terms: {bce: 1}}]"], "segment.train.loss[0].until_epoch", ["-1", ">= 0"]),
        (["segment.train.loss=[{until_epoch: 0, terms: {bce: -1}}]"], "segment.train.loss[0].terms.bce", ["-1", ">= 0"]),
        (["segment.train.loss=[{until_epoch: 0, terms: {}}]"], "segment.train.loss[0].terms", ["{}", "empty"]),
        (["segment.aux.weight=-0.5"], "segment.aux.weight", ["-0.5", ">= 0"]),
        (["classify.coverage_weight=-1"], "classify.coverage_weight", ["-1", ">= 0"]),
        (["classify.patch.enabled=true", "classify.patch.stride=200"], "classify.patch.stride", ["200", "[1, 128]"]),
        (["classify.patch.size=0"], "classify.patch.size", ["0", ">= 1"]),
        (["folds.coverage_bins=0"], "folds.coverage_bins", ["0", ">= 1"]),
        (["data.mask_threshold=-1"], "data.mask_threshold", ["-1", ">= 0"]),
        (["experiment.threads=-2"], "experiment.threads", ["-2", ">= 0"]),
        (["experiment.name=a/b"], "experiment.name", ["'a/b'", "letters, digits"]),
        (["experiment.name=my run"], "experiment.name", ["'my run'", "letters, digits"]),
        (["experiment.name=.."], "experiment.name", ["'..'", "letters, digits"]),
    ],
)
def test_range(overrides, key, words):
    _one_line(overrides, key, *words)


# ----------------------------------------------------------------------------- combinations


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        (["segment.model.encoder=resnet18"], "segment.model.encoder_weights", ["'lite'", "resnet18", "tu-efficientnet_lite0"]),
        (["classify.model.encoder=resnet18"], "classify.model.encoder_weights", ["'lite'", "resnet18", "tu-efficientnet_lite2"]),
        (
            ["segment.model.arch=FPN", "segment.model.decoder_attention=scse"],
            "segment.model.decoder_attention",
            ["FPN", "Unet", "UnetPlusPlus"],
        ),
        (
            ["segment.model.decoder_attention=scse", "segment.model.decoder_channels=[32, 16, 16, 8, 8]"],
            "segment.model.decoder_attention",
            ["at least 16", "[32, 16, 16, 8, 8]"],
        ),
        # smp's PAN and DeepLabV3Plus take one decoder width, not a list per block
        (["segment.model.arch=PAN"], "segment.model.decoder_channels", ["PAN", "[256, 128, 64, 32, 16]", "[]"]),
        (["segment.model.arch=DeepLabV3Plus"], "segment.model.decoder_channels", ["DeepLabV3Plus", "[]"]),
        (["segment.model.decoder_channels=[64, 32]"], "segment.model.decoder_channels", ["[64, 32]", "encoder_depth", "5"]),
    ],
)
def test_combination(overrides, key, words):
    _one_line(overrides, key, *words)


@pytest.mark.parametrize(
    "overrides",
    [
        ["segment.model.arch=PAN", "segment.model.decoder_channels=[]", "segment.model.encoder_weights=null"],
        ["segment.model.arch=FPN"],
        ["segment.model.encoder=resnet18", "segment.model.encoder_weights=imagenet"],
        ["segment.model.encoder_depth=4", "segment.input.size=48", "segment.model.decoder_channels=[64, 32, 16, 16]"],
        ["segment.input.mode=tile", "segment.input.size=96", "segment.input.tile_overlap=95"],
        ["pseudo.rounds=0", "ensemble.models=[segment]"],
        ["segment.train.folds=[2, 0]", "classify.train.folds=[1]"],
        ["classify.input.size=50"],  # the classifier pools: any size works when resized
        ["experiment.name=run-2.b_c"],
        ["segment.train.bf16=on", "classify.train.bf16=false"],
        ["scorer.policy=none", "submit.metric=iou", "classify.source=seg_head"],
        ["classify.train.scheduler=onecycle"],
    ],
)
def test_valid_values_load(overrides):
    config.load(DEMO, overrides)


def test_yaml_booleans_for_bf16_become_on_off():
    cfg = config.load(DEMO, ["segment.train.bf16=true", "classify.train.bf16=false"])
    assert cfg.segment.train.bf16 == "on" and cfg.classify.train.bf16 == "off"


def test_every_problem_is_listed_one_line_each():
    msg = _message(["scorer.policy=best", "submit.metric=map", "segment.train.epochs=0"])
    lines = msg.splitlines()
    assert len(lines) == 3, msg
    assert {line.split(":")[0] for line in lines} == {"scorer.policy", "submit.metric", "segment.train.epochs"}


# ----------------------------------------------------------------------------- classify keys


@pytest.mark.parametrize(
    "override",
    [
        "classify.model.arch=Unet",
        "classify.model.decoder_channels=[16]",
        "classify.train.loss=[{until_epoch: 0, terms: {bce: 1.0}}]",
        "classify.train.eval_threshold=0.5",
    ],
)
def test_classify_refuses_keys_it_ignores(override):
    key = override.split("=")[0]
    msg = _message([override])
    assert msg.startswith(f"unknown key '{key}'") and "closest valid key" in msg, msg


def test_classify_sections_hold_only_what_the_classifier_reads():
    cfg = config.load(DEMO)
    model, train = typed.to_dict(cfg.classify.model), typed.to_dict(cfg.classify.train)
    assert set(model) == {"encoder", "encoder_weights", "encoder_depth", "decoder_attention", "dropout"}
    assert not {"arch", "decoder_channels"} & set(model)
    assert not {"loss", "eval_threshold"} & set(train)
    assert {"loss", "eval_threshold"} <= set(typed.to_dict(cfg.segment.train))


def test_classify_hash_keeps_its_retired_keys():
    """Stage keys made before the classify keys were removed stay valid: the hashed section
    holds the removed keys with the one value every shipped config had."""
    hashed = typed.section(config.load(DEMO), "classify")
    assert hashed["model"]["arch"] == "classifier" and hashed["model"]["decoder_channels"] == []
    assert hashed["train"]["loss"] == [{"until_epoch": 0, "terms": {"bce": 1.0}, "lr_scale": 1.0}]
    assert hashed["train"]["eval_threshold"] == 0.5
    assert "arch" in typed.section(config.load(DEMO), "classify.model")
    assert "arch" not in config.dump(config.load(DEMO)).split("classify:")[1]


# ----------------------------------------------------------------------------- lists kept in step


def test_hard_coded_lists_match_their_registries():
    """The lists are hard-coded so that loading a config does not import torch/smp (seconds)."""
    import segmentation_models_pytorch as smp

    from pipeline.evaluation import metrics
    from pipeline.modeling import losses, models, pretrained

    assert {a.lower() for a in fields.SEG_ARCHS} == set(smp.MODEL_ARCHITECTURES_MAPPING)
    assert all(smp.MODEL_ARCHITECTURES_MAPPING[a.lower()].__name__ == a for a in fields.SEG_ARCHS)
    assert set(fields.LOSS_NAMES) == set(losses.LOSSES)
    assert set(fields.METRICS) == set(metrics.METRICS)
    assert list(fields.LITE_ENCODERS) == list(pretrained.LITE_PACKAGES)
    assert set(fields.ENCODER_WEIGHTS) == set(models.WEIGHTS)


def test_config_load_imports_no_torch():
    code = "import sys, pipeline.config.loader; print(sorted(m for m in ('torch', 'segmentation_models_pytorch', 'albumentations') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- CLI


def test_cli_bad_value_exits_2_in_seconds():
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "status", "--config", str(DEMO), "--set", "scorer.policy=best"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: scorer.policy:") and "'best'" in lines[0] and "per_image" in lines[0]
    assert seconds < 5, seconds

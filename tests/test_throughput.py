"""Issue 20's switches: progressive resizing by same-scale crops (segment.train.progressive) and
the TTA views batched into one forward pass (InferSpec.batch_tta)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pipeline.config.blocks import LossPhase
from pipeline.core.errors import ConfigError
from pipeline.data.datasets import crop_batch
from pipeline.inference.predict import predict
from pipeline.stages import GRAPH
from pipeline.training.segmentation import build_model, infer_spec, seg_task


def _batch(n: int = 4, size: int = 64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(n, 1, size, size)
    mask[0, :, :8, :8] = 1  # foreground in one corner of the first sample only
    mask[1] = 1
    return {
        "image": torch.randn(n, 3, size, size, generator=g),
        "mask": mask,
        "dist": torch.rand(n, 1, size, size, generator=g),
        "label": (mask.flatten(1) > 0).any(1).float(),
        "coverage": mask.flatten(1).mean(1),
        "index": torch.arange(n),
        "position": torch.arange(n),  # what the training loader adds (loader.KeyedDataset)
    }


def test_crop_batch_takes_each_samples_window_and_relabels_it():
    batch = _batch()
    corners = [np.random.default_rng(k).integers(0, 64 - 32 + 1, 2) for k in range(4)]
    out = crop_batch(batch, 32, [np.random.default_rng(k) for k in range(4)])
    assert out["image"].shape == (4, 3, 32, 32) and out["mask"].shape == out["dist"].shape == (4, 1, 32, 32)
    for i, (y, x) in enumerate(corners):
        assert torch.equal(out["image"][i], batch["image"][i, :, y : y + 32, x : x + 32])
        assert torch.equal(out["dist"][i], batch["dist"][i, :, y : y + 32, x : x + 32])  # cropped, not recomputed
        assert out["label"][i] == float(out["mask"][i].any()) and out["coverage"][i] == out["mask"][i].mean()
    assert out["label"][1] == 1 and out["coverage"][1] == 1 and out["label"][2] == 0
    assert torch.equal(out["index"], batch["index"])


def test_progressive_crops_only_before_until_epoch_and_repeats_its_crops(smoke_cfg):
    cfg = smoke_cfg("segment.train.progressive={crop: 32, until_epoch: 2}", "segment.input.size=64", "segment.train.epochs=4")
    prepare = seg_task(cfg.segment, None).prepare
    batch = _batch()
    assert prepare(batch, 0)["image"].shape[-1] == 32 and prepare(batch, 1)["image"].shape[-1] == 32
    assert prepare(batch, 2) is batch
    assert torch.equal(prepare(batch, 1)["image"], prepare(batch, 1)["image"])  # a resumed run crops alike
    assert not torch.equal(prepare(batch, 0)["image"], prepare(batch, 1)["image"])
    assert seg_task(smoke_cfg().segment, None).prepare is None  # off by default


def test_progressive_windows_follow_the_global_position_not_the_batch(smoke_cfg):
    """Under torchrun each process holds half of every global batch: its samples must get the
    windows they get in a 1-process run, which the loader's global positions make so."""
    cfg = smoke_cfg("segment.train.progressive={crop: 32, until_epoch: 2}", "segment.input.size=64", "segment.train.epochs=4")
    prepare = seg_task(cfg.segment, None).prepare
    whole = {**_batch(), "position": torch.tensor([10, 11, 12, 13])}  # a later global batch
    halves = [{k: v[part] for k, v in whole.items()} for part in (slice(0, 2), slice(2, 4))]
    joined = torch.cat([prepare(h, 1)["image"] for h in halves])
    assert torch.equal(prepare(whole, 1)["image"], joined)


def test_the_training_loader_hands_out_global_positions(smoke_cfg):
    from pipeline.data.loader import make_loader, set_epoch

    ds = [{"x": torch.tensor(float(i))} for i in range(6)]
    tcfg = dataclasses.replace(smoke_cfg().segment.train, batch_size=3)
    loader = make_loader(ds, tcfg, None, torch.Generator().manual_seed(0))
    set_epoch(loader, 0)
    assert [b["position"].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{crop: 48, until_epoch: 2}", "progressive.crop: got 48, must be a multiple of 32"),
        ("{crop: 32, until_epoch: 0}", "crop and until_epoch are set together or both 0, got 32 and 0"),
        ("{crop: 0, until_epoch: 3}", "crop and until_epoch are set together or both 0, got 0 and 3"),
        ("{crop: 64, until_epoch: 2}", "train.progressive.crop: got 64, must be smaller than input.size 64"),
        ("{crop: 32, until_epoch: 99}", "progressive.until_epoch: got 99, must be <= epochs - swa_epochs"),
    ],
)
def test_bad_progressive_settings_are_refused_at_load(smoke_cfg, value, message):
    with pytest.raises(ConfigError, match=message):
        smoke_cfg(f"segment.train.progressive={value}", "segment.input.size=64", "segment.train.epochs=4")


def test_progressive_crops_refuse_tile_mode(smoke_cfg):
    with pytest.raises(ConfigError, match="progressive crops need input.mode pad or resize, got tile"):
        smoke_cfg("segment.train.progressive={crop: 32, until_epoch: 1}", "segment.input={mode: tile, size: 64, tile_overlap: 8}")


def test_progressive_enters_the_segment_key_only_when_on(smoke_cfg, tmp_path):
    off = GRAPH.stage_key(smoke_cfg("segment.input.size=64", artifacts=tmp_path), "segment")
    assert (
        GRAPH.stage_key(
            smoke_cfg("segment.train.progressive={crop: 0, until_epoch: 0}", "segment.input.size=64", artifacts=tmp_path), "segment"
        )
        == off
    )
    assert (
        GRAPH.stage_key(
            smoke_cfg("segment.train.progressive={crop: 32, until_epoch: 1}", "segment.input.size=64", artifacts=tmp_path), "segment"
        )
        != off
    )


@pytest.mark.slow
def test_the_fitter_trains_on_crops_then_on_whole_inputs(smoke_cfg, tmp_path):
    from pipeline.training.loop import Fitter

    cfg = smoke_cfg("segment.train.progressive={crop: 32, until_epoch: 2}", "segment.input.size=64", "segment.train.epochs=4")
    sizes: list[tuple[int, int]] = []
    task = seg_task(cfg.segment, lambda m: {"score": 0.0})
    inner = task.loss

    def loss(out, batch, epoch):
        sizes.append((epoch, out["mask"].shape[-1]))
        return inner(out, batch, epoch)

    task = dataclasses.replace(task, loss=loss)
    tcfg = dataclasses.replace(cfg.segment.train, epochs=3, swa_epochs=0, batch_size=4, loss=[LossPhase(0, {"bce": 1.0})])
    full = {k: v for k, v in _batch(8).items() if k != "position"}  # the loader adds its own
    ds = [{k: v[i] for k, v in full.items()} for i in range(8)]
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg.segment, train=tcfg), 3)
    Fitter(model, task, tcfg, tmp_path / "fit", torch.device("cpu"), 0).fit(ds)
    assert sorted(set(sizes)) == [(0, 32), (1, 32), (2, 64)]


@pytest.fixture
def tiles(flip_predictor):
    return flip_predictor(6, "segment.train.bf16=off")


def test_batch_tta_reaches_the_oof_and_test_specs_only(smoke_cfg):
    cfg = smoke_cfg("experiment.batch_tta=true")
    assert infer_spec(cfg.segment, torch.device("cpu"), ["none"]).batch_tta is False  # validation
    assert infer_spec(cfg.segment, torch.device("cpu"), ["none"], cfg.experiment).batch_tta is True
    assert infer_spec(cfg.segment, torch.device("cpu"), ["none"], smoke_cfg().experiment).batch_tta is False


def test_batched_tta_runs_one_forward_per_batch_and_predicts_the_same(tiles):
    model, images, spec = tiles
    batch_sizes: list[int] = []
    model.register_forward_pre_hook(lambda m, args: batch_sizes.append(len(args[0])))
    plain = dict(predict(model, images, np.arange(6), spec))
    assert batch_sizes == [4, 4, 2, 2]  # a pass per view
    batch_sizes.clear()
    batched = dict(predict(model, images, np.arange(6), dataclasses.replace(spec, batch_tta=True)))
    assert batch_sizes == [8, 4]  # both views of a batch in one pass
    for i, out in plain.items():
        for k, v in out.items():
            np.testing.assert_allclose(batched[i][k], v, atol=1e-5)

"""Fitter checkpoints: crash-safe files, a previous checkpoint to fall back on, no unpickling of
arbitrary objects, and a resumed run bit-identical to an uninterrupted one."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.core import runtime
from pipeline.data.datasets import Geometry, SegDataset, build_augment
from pipeline.training.loop import Fitter, fit_done, make_loader
from pipeline.training.step import Task

AUGMENT = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "RandomBrightnessContrast", "p": 0.5}]


class _Stop(Exception):
    pass


class _TinyNet(nn.Module):
    """A few weights, BatchNorm (for SWA's BN update) and dropout (draws from the global torch
    RNG): seconds per fit on a busy CPU."""

    def __init__(self) -> None:
        super().__init__()
        layers = [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.2), nn.Conv2d(4, 1, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mask": self.body(x)}


@pytest.fixture(autouse=True)
def _one_thread():
    # Several torch threads on a loaded machine spin-wait each other (see conftest.FAST).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _dataset(seed: int = 0, n: int = 16) -> SegDataset:
    """Random 40x40 images cropped to 32 (tile mode) and augmented: every sample draws randomness."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 40, 1), dtype=np.uint8) for _ in range(n)]
    masks = [(rng.random((40, 40, 1)) > 0.8).astype(np.uint8) for _ in range(n)]
    return SegDataset(images, masks, np.arange(n), Geometry("tile", 32), build_augment(AUGMENT, seed), seed=seed)


def _fit(out: Path, smoke_cfg, stop_after: int | None = None, **tcfg_kw) -> dict:
    """Fit a tiny model from scratch (fresh objects, as a new process would); `stop_after`
    interrupts after that epoch's checkpoint, like a kill between epochs."""
    cfg = smoke_cfg()
    torch.manual_seed(0)
    model = _TinyNet()
    # SWA over the last epoch: the final model is the last weights, not a best-epoch pick.
    tcfg = dataclasses.replace(cfg.segment.train, **{"epochs": 3, "swa_epochs": 1, **tcfg_kw})
    task = Task(
        loss=lambda o, b, e: (F.binary_cross_entropy_with_logits(o["mask"], b["mask"]), {}),
        validate=lambda m: {"score": 0.0},
    )

    def stop(epoch: int) -> None:
        if epoch == stop_after:
            raise _Stop

    return Fitter(model, task, tcfg, out, torch.device("cpu"), 0).fit(_dataset(), on_epoch_end=stop)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", weights_only=True)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ----------------------------------------------------------------------------- point 4: crash-safe files


def test_truncated_fit_json_is_not_finished(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "fit.json").write_text('{"best_epoch": 1, "best_sc')
    assert not fit_done(tmp_path)
    (tmp_path / "fit.json").write_text('{"best_epoch": 1}')
    assert fit_done(tmp_path)


@pytest.mark.slow
def test_truncated_checkpoint_resumes_from_the_previous_one(tmp_path, smoke_cfg, caplog):
    out = tmp_path / "fit"
    with pytest.raises(_Stop):
        _fit(out, smoke_cfg, stop_after=1)  # two epochs checkpointed
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.INFO, logger="pipeline"):
        _fit(out, smoke_cfg)
    logs = [r.getMessage() for r in caplog.records]
    assert (out / "checkpoint.pt.corrupt").is_file()
    assert any("checkpoint.pt" in m for m in _warnings(caplog)), caplog.records
    assert "resuming fit at epoch 1" in logs  # the previous checkpoint, after epoch 0
    assert fit_done(out)
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [0, 1, 2]
    assert not list(out.glob("checkpoint*.pt")) and not list(out.glob(".*tmp*"))


# ----------------------------------------------------------------------------- point 5: weights_only


class _Payload:
    """Unpickling this creates `path`: what a checkpoint must never be able to do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_checkpoint_holding_arbitrary_objects_is_refused(tmp_path, smoke_cfg, caplog):
    out, marker = tmp_path / "fit", tmp_path / "payload-ran"
    out.mkdir()
    torch.save({"state": _Payload(marker), "model": {}}, out / "checkpoint.pt")
    try:
        with caplog.at_level(logging.WARNING):
            _fit(out, smoke_cfg, epochs=2)
    finally:
        assert not marker.exists(), "loading the checkpoint ran its payload"
    assert any("refus" in m and "checkpoint.pt" in m for m in _warnings(caplog)), caplog.records
    assert (out / "checkpoint.pt.corrupt").is_file()
    assert fit_done(out)


# ----------------------------------------------------------------------------- point 8: determinism


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path, smoke_cfg, workers, pipeline_logs):
    _fit(tmp_path / "whole", smoke_cfg, num_workers=workers)
    with pytest.raises(_Stop):
        _fit(tmp_path / "cut", smoke_cfg, stop_after=0, num_workers=workers)
    _fit(tmp_path / "cut", smoke_cfg, num_workers=workers)
    assert "resuming cut at epoch 1" in pipeline_logs()
    whole, resumed = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def _crops(smoke_cfg, num_workers: int) -> list[torch.Tensor]:
    """One epoch of single-sample batches, all of the same image: only the draws differ."""
    rng = np.random.default_rng(1)
    image, mask = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8), np.zeros((64, 64, 1), np.uint8)
    augment = build_augment([{"name": "RandomBrightnessContrast", "p": 1.0}], 0)
    ds = SegDataset([image], [mask], np.zeros(4, dtype=int), Geometry("tile", 32), augment, seed=0)
    tcfg = dataclasses.replace(smoke_cfg().segment.train, batch_size=1, num_workers=num_workers)
    return [b["image"][0] for b in make_loader(ds, tcfg, None, torch.Generator().manual_seed(0))]


def test_loader_workers_draw_distinct_crops_independent_of_the_worker_count(smoke_cfg):
    parallel = _crops(smoke_cfg, num_workers=2)
    assert len(parallel) == 4
    # Each worker used to hold a copy of the same generator: sample 0 (worker 0) and sample 1
    # (worker 1) came out identical.
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.equal(parallel[i], parallel[j]), (i, j)
    serial = _crops(smoke_cfg, num_workers=0)
    assert all(torch.equal(a, b) for a, b in zip(parallel, serial, strict=True))


def test_deterministic_switch():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        runtime.set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        runtime.set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        runtime.pick_device(SimpleNamespace(threads=0, device="cpu", deterministic=True))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_mean_teacher_batches_resume_identically_in_tile_mode(tmp_path, smoke_cfg):
    # The teacher's dataset crops at random in tile mode; its generator was not in the checkpoint.
    from pipeline.config.teachers import MeanTeacherCfg
    from pipeline.core.store import ArrayStore, write_store
    from pipeline.training.mean_teacher import MeanTeacher

    rng = np.random.default_rng(0)
    write_store(tmp_path, "imgs", ((f"t{i}", rng.integers(0, 255, (64, 64, 1), dtype=np.uint8)) for i in range(4)))
    mt_cfg = MeanTeacherCfg(enabled=True, weight=1.0, ema=0.5, batch_size=4, noise=0.1, final_teacher=False, mutual=False)

    def make() -> MeanTeacher:
        return MeanTeacher(ArrayStore(tmp_path, "imgs"), Geometry("tile", 32), mt_cfg, smoke_cfg().segment, seed=3)

    whole = make()
    whole._batch()
    state = whole.state_dict()
    expected = whole._batch()
    resumed = make()
    resumed.load_state_dict(state)
    assert torch.equal(resumed._batch(), expected)

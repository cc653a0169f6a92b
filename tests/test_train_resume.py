"""Fitter checkpoints: crash-safe files, a previous checkpoint to fall back on, no unpickling of
arbitrary objects, and a resumed run bit-identical to an uninterrupted one."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.datasets import Geometry, SegDataset, build_augment
from pipeline.train import Fitter, Task, fit_done

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


def _fit(out: Path, smoke_cfg, stop_after: int | None = None, logs: list[str] | None = None, **tcfg_kw) -> dict:
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

    log = logs.append if logs is not None else (lambda _: None)
    return Fitter(model, task, tcfg, out, torch.device("cpu"), 0, log).fit(_dataset(), on_epoch_end=stop)


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


def test_truncated_checkpoint_resumes_from_the_previous_one(tmp_path, smoke_cfg, caplog):
    out = tmp_path / "fit"
    with pytest.raises(_Stop):
        _fit(out, smoke_cfg, stop_after=1)  # two epochs checkpointed
    ckpt = out / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    logs: list[str] = []
    with caplog.at_level(logging.WARNING):
        _fit(out, smoke_cfg, logs=logs)
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

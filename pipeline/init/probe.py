"""The timed probe: a few training steps and an inference pass of the planned networks at the
planned input size, on this machine, so that the budget is set from this CPU's (or GPU's) speed
and not from a table. Random tensors stand in for images: the step's arithmetic does not depend
on pixel values; the data pipeline's own cost is the overhead factor of pipeline.init.budget."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pipeline.config.schema import Config
from pipeline.core.runtime import autocast, cpu_info, pick_device
from pipeline.modeling.models import ClassifierNet, build_segmentation

WARMUP, STEPS, INFER_BATCH = 2, 4, 8


@dataclass
class Probe:
    """Seconds per input (one image, tile or patch) at the planned size, per network."""

    seg_train: float
    seg_infer: float
    cls_train: float
    cls_infer: float
    seg_batch: int
    device: str
    cpu: dict

    def to_dict(self) -> dict:
        return {k: round(v, 5) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _timed(fn, repeats: int) -> float:
    for _ in range(WARMUP):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def _train_seconds(model: nn.Module, x: torch.Tensor, cfg_train, device: torch.device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast(device, cfg_train):
            out = model(x)
            loss = sum(v.float().mean() for v in out.values())  # every head's output enters the graph
        loss.backward()
        opt.step()

    return _timed(step, STEPS) / len(x)


@torch.no_grad()
def _infer_seconds(model: nn.Module, x: torch.Tensor, cfg_train, device: torch.device) -> float:
    model.eval()

    def step() -> None:
        with autocast(device, cfg_train):
            model(x)

    return _timed(step, STEPS) / len(x)


def _input(batch: int, channels: int, size: int, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.randn(batch, channels, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _prepared(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def run_probe(cfg: Config, channels: int) -> Probe:
    """Time the segmentation network (and the classifier when enabled) as `cfg` builds them."""
    device = pick_device(cfg.experiment)
    s, t = cfg.segment, cfg.segment.train
    torch.manual_seed(0)
    seg = _prepared(
        build_segmentation(s.model, channels, aux=s.aux.weight > 0, classes=cfg.data.n_classes, softmax=s.softmax), device, t.channels_last
    )
    size = s.input.size
    seg_train = _train_seconds(seg, _input(t.batch_size, channels, size, device, t.channels_last), t, device)
    seg_infer = _infer_seconds(seg, _input(INFER_BATCH, channels, size, device, t.channels_last), t, device)
    cls_train = cls_infer = 0.0
    c = cfg.classify
    if c.enabled and c.source == "separate":
        net = _prepared(ClassifierNet(c.model, channels, cfg.data.n_classes), device, c.train.channels_last)
        csize = c.patch.size if c.patch.enabled else c.input.size
        cls_train = _train_seconds(
            net, _input(min(c.train.batch_size, 32), channels, csize, device, c.train.channels_last), c.train, device
        )
        cls_infer = _infer_seconds(net, _input(INFER_BATCH, channels, csize, device, c.train.channels_last), c.train, device)
    return Probe(seg_train, seg_infer, cls_train, cls_infer, t.batch_size, str(device), cpu_info())

"""The training step: what a task is (loss, validation, batch transform, step hook) and one
epoch of optimiser steps under autocast, with gradient scaling and per-step schedules. The
loop (pipeline/training/loop.py) runs epochs of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.config.blocks import TrainCfg
from pipeline.core import distributed, runtime

Batch = dict[str, torch.Tensor]


class StepHook(Protocol):
    """A companion of the training loop (e.g. a mean teacher): an extra loss term computed from
    the model alone, an update after every optimiser step, and the state it carries between
    steps, saved in the epoch checkpoint so that a resumed run continues where it stopped."""

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> tuple[torch.Tensor, dict[str, float]]: ...

    def update(self, model: nn.Module, opt: torch.optim.Optimizer) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def final_model(self) -> tuple[str, nn.Module] | None:
        """(name, model) to save instead of the trained model, or None to keep the fitter's."""
        ...


@dataclass
class Task:
    """What differs between models: the loss and the per-epoch validation (returns 'score')."""

    loss: Callable[[Batch, Batch, int], tuple[torch.Tensor, dict[str, float]]]
    validate: Callable[[nn.Module], dict[str, float]]
    hook: StepHook | None = None
    prepare: Callable[[Batch, int], Batch] | None = None  # (batch, epoch) -> what the step trains on


def _to_device(batch: Batch, device: torch.device, channels_last: bool) -> Batch:
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if channels_last:
        out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
    return out


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    task: Task,
    opt: torch.optim.Optimizer,
    sched,
    tcfg: TrainCfg,
    device: torch.device,
    epoch: int,
    scaler=None,
    desc: str = "",
) -> dict[str, float]:
    """One pass over the loader; returns mean loss and parts. `model` may be wrapped in
    DistributedDataParallel; a hook sees the plain module."""
    model.train()
    totals: dict[str, float] = {}
    n = 0
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=5, disable=None):
        if task.prepare is not None:
            batch = task.prepare(batch, epoch)
        batch = _to_device(batch, device, tcfg.channels_last)
        with runtime.autocast(device, tcfg):
            out = model(batch["image"])
        # The loss runs in fp32: Lovász sorts errors and Dice sums areas, both fragile in bf16.
        loss, parts = task.loss({k: v.float() for k, v in out.items()}, batch, epoch)
        if task.hook is not None:
            extra, extra_parts = task.hook.loss(distributed.unwrap(model), batch, epoch)
            loss, parts = loss + extra, {**parts, **extra_parts}
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if task.hook is not None:
            task.hook.update(distributed.unwrap(model), opt)
        if sched is not None:
            sched.step()
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            totals[k] = totals.get(k, 0.0) + v
        n += 1
    return {f"train_{k}": v / max(n, 1) for k, v in totals.items()}

"""Learning-rate schedules per optimiser step: cosine over the main epochs, one cosine cycle per
loss phase (cosine_restarts), one-cycle, or none."""

from __future__ import annotations

import itertools
import math

import torch

from pipeline.config.blocks import FitCfg, TrainCfg


def phase_starts(tcfg: TrainCfg, main_epochs: int) -> list[tuple[int, float]]:
    """(first epoch, lr scale) of each loss phase that begins inside the main (pre-SWA) epochs."""
    starts, begin = [], 0
    for ph in tcfg.loss:
        if begin < main_epochs and (not starts or begin > starts[-1][0]):
            starts.append((begin, ph.lr_scale))
        if ph.until_epoch == 0:
            break
        begin = max(begin, ph.until_epoch)
    return starts


def build(opt: torch.optim.Optimizer, tcfg: FitCfg, steps_per_epoch: int, main_epochs: int):
    total_steps = steps_per_epoch * main_epochs
    if total_steps <= 0 or tcfg.scheduler == "none":
        return None
    if tcfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg.lr, total_steps=total_steps, pct_start=0.2)
    if tcfg.scheduler == "cosine_restarts":
        # One cosine cycle per loss phase: a single cosine over all epochs has decayed to almost
        # nothing by the time Lovász takes over, so the second loss barely trains (seen on tgs_salt).
        starts = phase_starts(tcfg, main_epochs)
        bounds = [e * steps_per_epoch for e, _ in starts] + [total_steps]
        scales = [sc for _, sc in starts]
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _cycle_factor(step, bounds, scales))
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=tcfg.lr * 0.01)


def _cycle_factor(step: int, bounds: list[int], scales: list[float], floor: float = 0.01) -> float:
    for (lo, hi), scale in zip(itertools.pairwise(bounds), scales, strict=True):
        if step < hi:
            return scale * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step - lo) / (hi - lo))))
    return floor * scales[-1]

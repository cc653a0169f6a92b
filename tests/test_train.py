"""Learning-rate schedules: cosine_restarts starts a new cycle at each loss phase."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.schema import LossPhase
from pipeline.train import _scheduler, phase_starts


def _tcfg(smoke_cfg, scheduler: str, epochs: int, swa: int, phases: list[LossPhase]):
    base = smoke_cfg().segment.train
    return dataclasses.replace(base, scheduler=scheduler, epochs=epochs, swa_epochs=swa, loss=phases, lr=1e-3)


def _lrs(tcfg, steps_per_epoch: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=tcfg.lr)
    main = tcfg.epochs - tcfg.swa_epochs
    sched = _scheduler(opt, tcfg, steps_per_epoch, main)
    out = []
    for _ in range(steps_per_epoch * main):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


TWO_PHASES = [LossPhase(4, {"bce": 1.0}), LossPhase(0, {"lovasz": 1.0})]


def test_phase_starts_ignores_boundaries_inside_swa(smoke_cfg):
    assert phase_starts(_tcfg(smoke_cfg, "cosine_restarts", 10, 2, TWO_PHASES), 8) == [(0, 1.0), (4, 1.0)]
    late = [LossPhase(9, {"bce": 1.0}), LossPhase(0, {"lovasz": 1.0})]
    assert phase_starts(_tcfg(smoke_cfg, "cosine_restarts", 10, 2, late), 8) == [(0, 1.0)]


def test_cosine_restarts_restarts_the_lr_at_the_loss_switch(smoke_cfg):
    spe = 5
    lrs = _lrs(_tcfg(smoke_cfg, "cosine_restarts", 10, 2, TWO_PHASES), spe)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[4 * spe - 1] < 1e-4  # decayed at the end of the BCE phase
    assert lrs[4 * spe] == pytest.approx(1e-3)  # back to the peak when Lovász starts
    assert lrs[-1] < 1e-4
    # plain cosine keeps decaying through the switch: the behaviour the restart fixes
    plain = _lrs(_tcfg(smoke_cfg, "cosine", 10, 2, TWO_PHASES), spe)
    assert plain[4 * spe] < 0.6e-3 and plain[0] == pytest.approx(1e-3)


def test_cosine_restarts_with_one_phase_equals_cosine(smoke_cfg):
    one = [LossPhase(0, {"bce": 1.0})]
    a = _lrs(_tcfg(smoke_cfg, "cosine_restarts", 6, 0, one), 4)
    b = _lrs(_tcfg(smoke_cfg, "cosine", 6, 0, one), 4)
    assert a == pytest.approx(b, rel=1e-6)


def test_lr_scale_sets_the_peak_of_a_phase_cycle(smoke_cfg):
    phases = [LossPhase(4, {"bce": 1.0}), LossPhase(0, {"lovasz": 1.0}, lr_scale=0.25)]
    spe = 5
    lrs = _lrs(_tcfg(smoke_cfg, "cosine_restarts", 10, 2, phases), spe)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[4 * spe] == pytest.approx(0.25e-3)  # Lovász cycle peaks at a quarter of the lr
    assert max(lrs[4 * spe :]) == pytest.approx(0.25e-3)


def test_lr_scale_without_cosine_restarts_is_refused(smoke_cfg):
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=r"loss\[1\].lr_scale needs scheduler cosine_restarts"):
        smoke_cfg("segment.train.loss=[{until_epoch: 1, terms: {bce: 1.0}}, {until_epoch: 0, terms: {lovasz: 1.0}, lr_scale: 0.5}]")

"""Learning-rate schedules: cosine_restarts starts a new cycle at each loss phase."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.config.blocks import LossPhase
from pipeline.training.schedules import build as _scheduler
from pipeline.training.schedules import phase_starts


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
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss\[1\].lr_scale needs scheduler cosine_restarts"):
        smoke_cfg("segment.train.loss=[{until_epoch: 1, terms: {bce: 1.0}}, {until_epoch: 0, terms: {lovasz: 1.0}, lr_scale: 0.5}]")


# ----------------------------------------------------------------------------- validation frequency


def _fit_counting(tmp_path, smoke_cfg, **tcfg_kw):
    """Fit a tiny model; returns the epochs that were validated and the fit summary."""
    from pipeline.modeling.models import build_segmentation
    from pipeline.training.loop import Fitter
    from pipeline.training.step import Task

    cfg = smoke_cfg()
    torch.manual_seed(0)
    model = build_segmentation(cfg.segment.model, 1, aux=False)
    scores = iter([0.1, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7])
    seen = []

    def validate(m):
        seen.append(len(seen))
        return {"score": next(scores)}

    ds = [{"image": torch.randn(1, 32, 32), "mask": torch.zeros(1, 32, 32)} for _ in range(8)]
    tcfg = dataclasses.replace(cfg.segment.train, **tcfg_kw)
    task = Task(loss=lambda out, batch, epoch: (out["mask"].mean(), {}), validate=validate)
    summary = Fitter(model, task, tcfg, tmp_path / "fit", torch.device("cpu"), 0).fit(ds)
    return len(seen), summary, tmp_path / "fit"


@pytest.mark.slow
def test_val_every_validates_every_nth_and_the_last_epoch(tmp_path, smoke_cfg):
    import pandas as pd

    n_val, summary, folder = _fit_counting(tmp_path, smoke_cfg, epochs=5, swa_epochs=0, val_every=2, loss=[LossPhase(0, {"bce": 1.0})])
    assert n_val == 3  # epochs 1, 3 and the last (4)
    history = pd.read_csv(folder / "metrics.csv")
    assert history["val_score"].notna().tolist() == [False, True, False, True, True]
    # best is chosen among the validated epochs only: scores 0.1 (ep1), 0.5 (ep3), 0.2 (ep4)
    assert summary["best_epoch"] == 3
    # ...but the final model is the last epoch's: picking the epoch on the validation fold
    # would choose the model on the labels its OOF is scored on.
    assert summary["final"] == "last"
    final, best = (torch.load(folder / name, weights_only=True) for name in ("model.pt", "best.pt"))
    assert not all(torch.equal(final[k], best[k]) for k in final)
    assert (folder / "curves.png").exists()


@pytest.mark.slow
def test_val_every_one_validates_each_epoch(tmp_path, smoke_cfg):
    n_val, summary, _ = _fit_counting(tmp_path, smoke_cfg, epochs=3, swa_epochs=0, val_every=1, loss=[LossPhase(0, {"bce": 1.0})])
    assert n_val == 3 and summary["best_epoch"] == 1


def test_val_every_below_one_is_refused(smoke_cfg):
    from pipeline.core.errors import ConfigError

    with pytest.raises(ConfigError, match="val_every must be >= 1"):
        smoke_cfg("segment.train.val_every=0")

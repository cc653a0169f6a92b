"""Training options as plug-ins (options.base.Option): each transforms one fold's training set,
sampler or loop through the hooks of one small interface, so that a new option is a new module
and an entry in `for_fold`, never an edit of the fold trainer. Options combine unless the config
check (pipeline/config/validate.py) says why two cannot."""

from __future__ import annotations

from pipeline.config.schema import Config
from pipeline.training.options.base import Option
from pipeline.training.options.context import Context
from pipeline.training.options.hard import HardRound
from pipeline.training.options.rounds import FoldExtras
from pipeline.training.options.sampling import Balance, Oversampling
from pipeline.training.options.subclasses import SubClasses


def for_fold(cfg: Config, extras: FoldExtras | None = None) -> list[Option]:
    """The options of a fold of `cfg`, in the order each hook runs them: the config's, then
    what the stage hands over (a pseudo round's or a student's). So sub-class masks come before
    soft targets (the config check keeps the two apart), and oversampling before the balance
    weights that multiply it."""
    scfg = cfg.segment
    out: list[Option] = [SubClasses(scfg.subclasses)] if scfg.subclasses is not None else []
    out += [Context()] if scfg.context.enabled else []
    out += [Oversampling()]
    out += [Balance()] if scfg.balance.on else []
    out += [HardRound()] if scfg.hard.enabled else []
    return out + (extras or FoldExtras()).options()

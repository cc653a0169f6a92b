"""Several segmentation models in one experiment (`segment.models`).

The `segment` section is itself the first model, named `segment`, and the defaults of the
others: each entry of `segment.models` names a model and the segment keys in which it differs
(architecture, encoder, input size, any training key). A model's config is the experiment's with
its merged section in place of `segment` (and no zoo), so each model is the segment stage of
that config: its own cached artifact, its own key (equal to that of a one-model experiment with
the same section) and fold reuse. Its pseudo rounds are the pseudo stage of the same config.

`ensemble.models` names what the blend reads: `segment`, `pseudo` (the pseudo rounds of
`segment`), a model name, `pseudo:NAME` (that model's pseudo rounds) or `distill` (the student of
the distill stage, pipeline/training/distill.py)."""

from __future__ import annotations

import dataclasses
import re

from pipeline.config import typed
from pipeline.config.schema import Config
from pipeline.config.segment import SegmentCfg
from pipeline.core.errors import UserError

BASE = "segment"
PSEUDO = "pseudo"
DISTILL = "distill"
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
# A model's artifact sits in ctx.upstream under its name, beside the stages': none may be one.
RESERVED = ("segment", "pseudo", "distill", "ingest", "ingest_test", "folds", "classify", "ensemble", "scorer", "submit")


def parse(entry: str) -> tuple[str, str]:
    """An `ensemble.models` entry -> (stage, model): `pseudo:unet` -> ("pseudo", "unet")."""
    if entry == PSEUDO:
        return PSEUDO, BASE
    if entry == DISTILL:
        return DISTILL, DISTILL
    stage, sep, model = entry.partition(":")
    return (PSEUDO, model) if sep and stage == PSEUDO else (BASE, entry)


def model_cfg(cfg: Config, name: str) -> Config:
    """The config that trains model `name`: its merged segment section, no zoo (a blend of
    itself, no student: stage keys of that config are computable, `status --model`)."""
    if name == BASE:
        return _alone(cfg, dataclasses.replace(cfg.segment, models={}))
    if name not in cfg.segment.models:
        known = ", ".join([BASE, *cfg.segment.models])
        raise UserError(f"--model {name}: not a model of this config (segment.models); known: {known}")
    base = typed.to_dict(cfg.segment) | {"models": {}}
    merged = typed.merge(base, cfg.segment.models[name])
    segment = typed.build_section(SegmentCfg, merged, f"segment.models.{name}")
    return _alone(cfg, segment)


def _alone(cfg: Config, segment: SegmentCfg) -> Config:
    # Only the segment and pseudo stages of this config run, and they hash neither section.
    ensemble = dataclasses.replace(cfg.ensemble, models=[BASE])
    return dataclasses.replace(cfg, segment=segment, ensemble=ensemble, distill=dataclasses.replace(cfg.distill, enabled=False))


def entry_cfg(cfg: Config, entry: str) -> Config:
    """The config that builds and predicts the fold models of an `ensemble.models` entry."""
    stage, model = parse(entry)
    return model_cfg(cfg, cfg.distill.student if stage == DISTILL else model)


def teachers(cfg: Config) -> list[str]:
    """The entries whose blend the distill student learns from."""
    return cfg.distill.teachers or [m for m in cfg.ensemble.models if m != DISTILL]


def upstream(cfg: Config, entries: list[str] | None = None) -> dict[str, tuple[Config, str]]:
    """The zoo models that `entries` (default: `ensemble.models`) name, as {entry: (its config,
    its stage)}: what the ensemble reads beyond the `segment` and `pseudo` stages of the
    experiment itself."""
    out: dict[str, tuple[Config, str]] = {}
    for entry in cfg.ensemble.models if entries is None else entries:
        stage, model = parse(entry)
        if stage == DISTILL:
            out[entry] = (cfg, DISTILL)
        elif model != BASE:
            sub = model_cfg(cfg, model)
            # A model's segment artifact also under its name: pseudo:NAME's distance maps and
            # head probabilities come from it when it leads the blend.
            out |= {entry: (sub, stage), model: (sub, BASE)}
    return out


def with_context(cfg: Config) -> dict[str, Config]:
    """The models of `cfg` (segment and segment.models) that grow their tiles with mosaic
    context (segment.context), by name, with their configs."""
    subs = {name: model_cfg(cfg, name) for name in [BASE, *cfg.segment.models]}
    return {name: sub for name, sub in subs.items() if sub.segment.context.enabled}


def mosaic_used(cfg: Config) -> bool:
    """Whether a stage of `cfg` reads the mosaic stage: a model grown with context, or the
    scorer's edge features."""
    return bool(cfg.scorer.edges or with_context(cfg))

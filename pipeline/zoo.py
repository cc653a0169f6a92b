"""Several segmentation models in one experiment (`segment.models`).

The `segment` section is itself the first model, named `segment`, and the defaults of the
others: each entry of `segment.models` names a model and the segment keys in which it differs
(architecture, encoder, input size, any training key). A model's config is the experiment's with
its merged section in place of `segment` (and no zoo), so each model is the segment stage of
that config: its own cached artifact, its own key (equal to that of a one-model experiment with
the same section) and fold reuse. Its pseudo rounds are the pseudo stage of the same config.

`ensemble.models` names what the blend reads: `segment`, `pseudo` (the pseudo rounds of
`segment`), a model name, `pseudo:NAME` (that model's pseudo rounds) or `distill` (the student of
the distill stage, pipeline/distill.py)."""

from __future__ import annotations

import dataclasses
import re

from pipeline import config as config_mod
from pipeline.errors import UserError
from pipeline.schema import Config, SegmentCfg

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
    base = config_mod.to_dict(cfg.segment) | {"models": {}}
    merged = config_mod.merge(base, cfg.segment.models[name])
    segment = config_mod.build_section(SegmentCfg, merged, f"segment.models.{name}")
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


def problems(cfg: Config) -> list[tuple[str, str]]:
    """Bad model names, bad keys or values in a model's section (checked as the section
    itself is), and `ensemble.models` entries that name no model."""
    out: list[tuple[str, str]] = []
    for name in cfg.segment.models:
        if not NAME.fullmatch(name) or name in RESERVED:
            out.append(
                (f"segment.models.{name}", f"a model name is a letter then letters, digits, _ or -, and not one of {', '.join(RESERVED)}")
            )
            continue
        try:
            sub = model_cfg(cfg, name)
        except config_mod.ConfigError as exc:  # "key: text", or "unknown key 'segment.models...'"
            key, _, text = str(exc).partition(": ") if str(exc).startswith("segment.models.") else (f"segment.models.{name}", "", str(exc))
            out.append((key, text))
            continue
        from pipeline import validate  # validate imports the schema, which this module needs first

        # The other sections are the experiment's own, checked once already.
        out += [
            (k.replace("segment", f"segment.models.{name}", 1), t) for k, t in validate.section_problems(sub) if k.startswith("segment")
        ]
    out += _entry_problems("ensemble.models", cfg.ensemble.models, cfg, DISTILL if cfg.distill.enabled else None)
    return out + _distill_problems(cfg)


def _entry_problems(key: str, entries: list[str], cfg: Config, distill: str | None) -> list[tuple[str, str]]:
    names = [BASE, *cfg.segment.models]
    valid = [BASE, PSEUDO, *cfg.segment.models, *(f"pseudo:{n}" for n in cfg.segment.models), *([distill] if distill else [])]
    out = []
    for i, entry in enumerate(entries):
        stage, model = parse(entry)
        if (stage == DISTILL and not distill) or (stage != DISTILL and model not in names):
            out.append((f"{key}[{i}]", f"got {entry!r}, which names no model; valid entries: {', '.join(valid)}"))
    return out


def _distill_problems(cfg: Config) -> list[tuple[str, str]]:
    d = cfg.distill
    if not d.enabled:
        return []
    if d.student not in (BASE, *cfg.segment.models):
        return [("distill.student", f"got {d.student!r}; valid: {', '.join([BASE, *cfg.segment.models])}")]
    if not teachers(cfg):
        return [("distill.teachers", "empty, and ensemble.models names no model beside distill")]
    if cfg.data.classes:
        return [("distill.enabled", "the student learns one binary class's soft maps; data.classes names several")]
    if model_cfg(cfg, d.student).segment.subclasses is not None:
        return [("distill.student", "learns one soft map per image; its segment.subclasses must be null")]
    return _entry_problems("distill.teachers", d.teachers, cfg, None)

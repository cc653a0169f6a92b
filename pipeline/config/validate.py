"""Value checks of a loaded config, all at load: a bad value must fail in seconds, not after an
hour of training. Each problem is one line naming the key, the value and what is valid.

Fields declare their valid values with `valid(...)` (pipeline.config.fields, used beside each
field in pipeline.config.schema); a section's `check()` covers what spans its fields; `_RULES`
below cover what spans sections, the zoo's models among them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pipeline.config import zoo
from pipeline.config.fields import Problems, field_problems
from pipeline.config.schema import Config
from pipeline.core.errors import ConfigError


def _walk(obj: Any, where: str, out: Problems) -> None:
    before = len(out)
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        key, value = f"{where}.{f.name}" if where else f.name, getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _walk(value, key, out)
        elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            for i, item in enumerate(value):
                _walk(item, f"{key}[{i}]", out)
        if "valid" in f.metadata:
            out.extend(field_problems(key, value, f.metadata["valid"]))
    # A section's own check reads several of its fields: run it only when each is valid, so
    # that one bad value gives one line.
    check = getattr(obj, "check", None)
    if check is not None and len(out) == before:
        out.extend((f"{where}.{name}" if name else where, text) for name, text in check())


def _bad(out: Problems, *keys: str) -> bool:
    """Whether a problem was already reported at or under one of `keys`."""
    return any(k == key or k.startswith((f"{key}.", f"{key}[")) for k, _ in out for key in keys)


def _fold_indices(cfg: Config, out: Problems) -> Problems:
    n = cfg.folds.n_folds
    if _bad(out, "folds"):
        return []
    sections = (("segment", cfg.segment.train.folds), ("classify", cfg.classify.train.folds))
    return [
        (f"{name}.train.folds[{i}]", f"got {k}, must be in [0, {n - 1}] (folds.n_folds is {n})")
        for name, folds in sections
        for i, k in enumerate(folds)
        if not 0 <= k < n
    ]


def _pseudo_rounds(cfg: Config, out: Problems) -> Problems:
    if _bad(out, "pseudo"):
        return []
    if names_pseudo(cfg) and cfg.pseudo.rounds < 1:
        return [("pseudo.rounds", f"got {cfg.pseudo.rounds}, must be >= 1 when ensemble.models names pseudo")]
    if cfg.pseudo.score_select.enabled and cfg.pseudo.rounds < 1:
        return [("pseudo.score_select.enabled", "chooses the images of pseudo rounds; set pseudo.rounds >= 1")]
    if cfg.pseudo.score_select.enabled and cfg.data.classes:
        return [("pseudo.score_select.enabled", "predicts one binary class's metric; set data.classes: [] or turn it off")]
    return []


def _network_input(cfg: Config, out: Problems) -> Problems:
    # smp's segmentation models refuse an input side not divisible by the encoder's output
    # stride (2^depth, at most 32), at the first batch; pad mode is checked by InputCfg.
    inp, depth = cfg.segment.input, cfg.segment.model.encoder_depth
    if _bad(out, "segment.input", "segment.model.encoder_depth") or inp.mode == "pad":
        return []
    stride = 2 ** min(depth, 5)
    if inp.size % stride:
        return [("segment.input.size", f"got {inp.size}, must be a multiple of {stride} (the output stride of a depth-{depth} encoder)")]
    return []


def _classes(cfg: Config, out: Problems) -> Problems:
    """The target type against data.classes, and what K > 1 classes do not reach yet."""
    if _bad(out, "data.classes", "segment.target"):
        return []
    k, target = len(cfg.data.classes), cfg.segment.target
    if target == "binary" and k > 1:
        return [("segment.target", f"got binary with {k} data.classes; set multilabel (classes may overlap) or multiclass (exclusive)")]
    if target != "binary" and k < 2:
        return [("segment.target", f"got {target}, which needs data.classes to name 2 classes at least")]
    if target == "multiclass" and not cfg.data.exclusive:
        return [("segment.target", "got multiclass (softmax: one class per pixel), which needs data.exclusive: true")]
    if target == "multiclass" and cfg.pseudo.soft and (cfg.pseudo.rounds > 0 or names_pseudo(cfg)):
        # A softmax trains on class indices (pipeline.modeling.losses.class_index): soft planes have none.
        return [("pseudo.soft", "got true with segment.target multiclass, which trains on class indices; set pseudo.soft: false")]
    if cfg.ensemble.readout == "foreground" and target != "multiclass":
        # Overlapping classes: a pixel may hold several, so no one class can take a defect's foreground.
        return [
            ("ensemble.readout", f"got foreground, which gives each defect one class and needs segment.target: multiclass (got {target})")
        ]
    return _subclasses(cfg)


def _subclasses(cfg: Config) -> Problems:
    if cfg.segment.subclasses is None:
        return []
    if cfg.segment.target != "binary":
        return [("segment.subclasses", f"splits one binary class; segment.target is {cfg.segment.target}")]
    if cfg.pseudo.rounds > 0 or names_pseudo(cfg):
        return [("segment.subclasses", "pseudo-labels (soft binary masks) cannot be split into sub-classes; set pseudo.rounds: 0")]
    return []


def _zoo(cfg: Config, out: Problems) -> Problems:
    if _bad(out, "segment", "ensemble.models"):
        return []
    return _zoo_problems(cfg)


def _zoo_problems(cfg: Config) -> list[tuple[str, str]]:
    """Bad model names, bad keys or values in a model's section (checked as the section
    itself is), and `ensemble.models` entries that name no model."""
    out: list[tuple[str, str]] = []
    for name in cfg.segment.models:
        if not zoo.NAME.fullmatch(name) or name in zoo.RESERVED:
            out.append(
                (
                    f"segment.models.{name}",
                    f"a model name is a letter then letters, digits, _ or -, and not one of {', '.join(zoo.RESERVED)}",
                )
            )
            continue
        try:
            sub = zoo.model_cfg(cfg, name)
        except ConfigError as exc:  # "key: text", or "unknown key 'segment.models...'"
            key, _, text = str(exc).partition(": ") if str(exc).startswith("segment.models.") else (f"segment.models.{name}", "", str(exc))
            out.append((key, text))
            continue
        # The other sections are the experiment's own, checked once already.
        out += [(k.replace("segment", f"segment.models.{name}", 1), t) for k, t in section_problems(sub) if k.startswith("segment")]
    out += _entry_problems("ensemble.models", cfg.ensemble.models, cfg, zoo.DISTILL if cfg.distill.enabled else None)
    return out + _distill_problems(cfg)


def _entry_problems(key: str, entries: list[str], cfg: Config, distill: str | None) -> list[tuple[str, str]]:
    names = [zoo.BASE, *cfg.segment.models]
    valid = [zoo.BASE, zoo.PSEUDO, *cfg.segment.models, *(f"pseudo:{n}" for n in cfg.segment.models), *([distill] if distill else [])]
    out = []
    for i, entry in enumerate(entries):
        stage, model = zoo.parse(entry)
        if (stage == zoo.DISTILL and not distill) or (stage != zoo.DISTILL and model not in names):
            out.append((f"{key}[{i}]", f"got {entry!r}, which names no model; valid entries: {', '.join(valid)}"))
    return out


def _distill_problems(cfg: Config) -> list[tuple[str, str]]:
    d = cfg.distill
    if not d.enabled:
        return []
    if d.student not in (zoo.BASE, *cfg.segment.models):
        return [("distill.student", f"got {d.student!r}; valid: {', '.join([zoo.BASE, *cfg.segment.models])}")]
    if not zoo.teachers(cfg):
        return [("distill.teachers", "empty, and ensemble.models names no model beside distill")]
    if cfg.data.classes:
        return [("distill.enabled", "the student learns one binary class's soft maps; data.classes names several")]
    if zoo.model_cfg(cfg, d.student).segment.subclasses is not None:
        return [("distill.student", "learns one soft map per image; its segment.subclasses must be null")]
    return _entry_problems("distill.teachers", d.teachers, cfg, None)


def _embed(cfg: Config, out: Problems) -> Problems:
    found: Problems = []
    if cfg.folds.clusters and not cfg.embed.enabled:
        found.append(("folds.clusters", "groups by the embed stage's clusters, which needs embed.enabled: true"))
    uses = [("segment.balance", "weights", cfg.segment.balance.on), ("scorer.knn", "reads", cfg.scorer.knn > 0)]
    for key, verb, on in uses:
        if on and not cfg.embed.enabled:
            found.append((key, f"{verb} the embed stage's outputs, which needs embed.enabled: true"))
        elif on and cfg.embed.constraint:
            # The constraint reads every train mask: what a fit scored on a fold takes from the
            # embeddings would carry that fold's masks (fold groups are exempt, as stratification is).
            found.append((key, "needs embed.constraint: 0 (the constraint reads the validation folds' masks)"))
    return found


def _context(cfg: Config, out: Problems) -> Problems:
    """What mosaic context does not reach yet: the stages that train or predict on test tiles
    outside the segment and ensemble stages read plain tiles."""
    if cfg.scorer.edges and cfg.data.classes and not _bad(out, "scorer", "data.classes"):
        return [("scorer.edges", "edge features are built for one binary class so far; data.classes names several")]
    if _bad(out, "segment", "pseudo", "distill", "ensemble.models"):
        return []
    grown = {n: sub.segment.context for n, sub in zoo.with_context(cfg).items()}
    if not grown:
        return []
    if cfg.pseudo.rounds > 0 or names_pseudo(cfg):
        return [("segment.context", "pseudo rounds read plain tiles; set pseudo.rounds: 0 and leave pseudo out of ensemble.models")]
    taught = {cfg.distill.student, *(zoo.parse(e)[1] for e in zoo.teachers(cfg))} if cfg.distill.enabled else set()
    if taught & set(grown):
        return [("segment.context", "the distill stage reads plain tiles; set distill.enabled: false or leave context models out of it")]
    if len({c.ratio for c in grown.values()}) > 1:
        return [("segment.context.ratio", "every model with context reads one neighbour search; give them one ratio")]
    if cfg.segment.subclasses is not None and cfg.segment.context.enabled:
        return [("segment.context", "sub-class masks are not grown with context yet; set segment.subclasses: null")]
    return []


def names_pseudo(cfg: Config) -> bool:
    """Whether ensemble.models names pseudo rounds (`pseudo` or `pseudo:NAME`)."""
    return any(m == "pseudo" or m.startswith("pseudo:") for m in cfg.ensemble.models)


_RULES: tuple[Callable[[Config, Problems], Problems], ...] = (
    _fold_indices,
    _pseudo_rounds,
    _network_input,
    _classes,
    _zoo,
    _embed,
    _context,
)


def section_problems(cfg: Config) -> Problems:
    """Every problem of a typed config, as (key, text)."""
    out: Problems = []
    _walk(cfg, "", out)
    for rule in _RULES:
        out.extend(rule(cfg, out))
    return out


def problems(cfg: Config) -> list[str]:
    """Every problem of a typed config, as 'key: text' lines (empty when it is valid)."""
    return [f"{key}: {text}" for key, text in section_problems(cfg)]

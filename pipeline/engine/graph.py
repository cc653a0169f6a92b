"""The stage graph and its keys: each stage's declaration (`Stage`: function, hashed sections,
upstreams, extras, models), a table of them with the rules for config keys hashed only when on,
hashed elsewhere or never (`Graph`; pipeline/stages/__init__.py builds the pipeline's), and a
stage's key: the hash of its sections, seed, input fingerprints and upstream keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from pipeline.config import typed
from pipeline.config.schema import Config

if TYPE_CHECKING:  # the context a stage function receives (pipeline/engine/cache.py)
    from pipeline.engine.cache import Context


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: `fn(ctx) -> metrics` writes its artifacts into ctx.dir."""

    name: str
    sections: tuple[str, ...]
    upstream: tuple[str, ...]
    fn: Callable[[Context], dict]
    version: str = "1"
    inputs: Callable[[Config], dict] | None = None  # fingerprint of external files
    # Config values read only in some settings; hashed only when non-empty, so keys of the
    # usual setting do not change when such an option is added.
    extra: Callable[[Config], dict] | None = None
    doc: str = ""
    # Stages of other configs it reads (the zoo's models: pipeline.config.zoo.upstream), as
    # {name in ctx.upstream: (config, stage)}; hashed as upstream keys.
    models: Callable[[Config], dict[str, tuple[Config, str]]] | None = None
    # The config key listing the folds it trains (empty = all folds.n_folds), for the stages
    # that train models fold by fold: only those may run single folds (--fold), and under
    # torchrun every process runs them (rank 0 writes) while the other stages run on rank 0 alone.
    folds_key: str | None = None

    @property
    def trains(self) -> bool:
        return self.folds_key is not None


@dataclass(frozen=True)
class Graph:
    """The stage table (pipeline/stages/__init__.py builds the one the pipeline runs) and the
    rules for the config keys no stage key hashes as they stand. Every engine function that
    walks stages takes it: there is no module-level table to fill by importing something."""

    stages: Mapping[str, Stage]  # in run order
    # Config switches hashed only when on (a truthy value, a sub-section whose `enabled` is
    # true, or one without `enabled` with any truthy value), by every stage whose hashed
    # sections hold them: adding an opt-in option, off by default, keeps existing artifacts'
    # keys. A switch whose default is a value (segment.target: binary) maps to its off value.
    opt_in: Mapping[str, Any] = field(default_factory=dict)
    # Config values no stage key hashes where they sit (segment.models: each model is hashed
    # as a stage of its own config, and a stage reading it hashes that key).
    unhashed: frozenset[str] = frozenset()
    # Config keys no stage key hashes at all (experiment.threads): declared, so that a key that
    # is in no hashed section and not declared here fails a test instead of going unnoticed.
    not_hashed: frozenset[str] = frozenset()

    def __iter__(self) -> Iterator[str]:
        return iter(self.stages)

    def get(self, name: str) -> Stage:
        if name not in self.stages:
            raise KeyError(f"unknown stage {name!r}; valid stages: {', '.join(self.stages)}")
        return self.stages[name]

    def with_stages(self, *extra: Stage) -> Graph:
        """This graph with more stages after its own (tests add stages of their own)."""
        return replace(self, stages={**self.stages, **{s.name: s for s in extra}})

    def fold_stages(self) -> list[str]:
        """The stages trained fold by fold (those that may run single folds)."""
        return [s.name for s in self.stages.values() if s.folds_key]

    def key_material(self, cfg: Config, name: str, _memo: dict | None = None) -> dict:
        """Everything a stage's key hashes: own sections, seed, inputs, upstream keys."""
        stage = self.get(name)
        material = {
            "stage": name,
            "version": stage.version,
            "seed": cfg.experiment.seed,
            "config": _hashed_sections(self, cfg, stage),
            "inputs": stage_inputs(cfg, stage),
            "upstream": {u: self.stage_key(cfg, u, _memo) for u in stage.upstream},
        }
        for model, (sub, sub_stage) in (stage.models(cfg) if stage.models else {}).items():
            material["upstream"][model] = self.stage_key(sub, sub_stage, model_memo(_memo if _memo is not None else {}, model))
        extra = stage.extra(cfg) if stage.extra else {}
        if extra:
            material["extra"] = extra
        return material

    def stage_key(self, cfg: Config, name: str, _memo: dict | None = None) -> str:
        memo = {} if _memo is None else _memo
        if name not in memo:
            memo[name] = digest(self.key_material(cfg, name, memo))
        return memo[name]


def digest(obj: Any) -> str:
    """12-hex-digit hash of a JSON-able object (keys sorted): stage keys and similar."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def stage_inputs(cfg: Config, stage: Stage) -> dict:
    return stage.inputs(cfg) if stage.inputs else {}


def _drop(out: dict, path: str) -> None:
    """Remove the value at dotted `path` from the hashed sections `out`."""
    if path in out:  # a stage that hashes the switch itself as a section
        out.pop(path)
    for s, hashed in out.items():
        if path.startswith(s + "."):
            *parents, leaf = path[len(s) + 1 :].split(".")
            for part in parents:
                hashed = hashed.get(part)
                if hashed is None:  # an enclosing switch is off and already dropped
                    break
            else:
                hashed.pop(leaf, None)


def _hashed_sections(graph: Graph, cfg: Config, stage: Stage) -> dict:
    out = {s: typed.section(cfg, s) for s in stage.sections}
    for switch, off in sorted(graph.opt_in.items()):
        value = typed.section(cfg, switch)
        # A switch section without `enabled` is on when any of its values is set.
        on = (value.get("enabled") if "enabled" in value else any(value.values())) if isinstance(value, dict) else value
        if not ((value != off) if off is not None else on):
            _drop(out, switch)
    for path in sorted(graph.unhashed):
        _drop(out, path)
    return out


def model_memo(memo: dict, name: str) -> dict:
    """The key memo of a zoo model's config, inside the experiment's."""
    return memo.setdefault(("model", name), {})

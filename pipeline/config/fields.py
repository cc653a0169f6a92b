"""Each config field's valid values: the enumerations, and `valid(...)`, which declares a
dataclass field's choices and bounds beside the field itself (pipeline.config.schema).

The enumerations that mirror a registry are copies, because importing the registries' modules
(torch, smp: seconds) would slow every CLI call; a test keeps each copy equal to its registry."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# smp's own architecture registry (smp.MODEL_ARCHITECTURES_MAPPING), spelt as its classes; a
# test keeps the two equal. Hard-coded so that loading a config does not import smp.
SEG_ARCHS = (
    "Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "PAN", "UPerNet", "Segformer", "DPT",
)  # fmt: skip
LOSS_NAMES = ("bce", "ce", "dice", "lovasz", "focal", "jaccard", "tversky")  # losses.LOSSES
TARGETS = ("binary", "multilabel", "multiclass")
METRICS = ("tgs", "dice", "iou")  # metrics.METRICS
LITE_ENCODERS = ("tu-efficientnet_lite0", "tu-efficientnet_lite1", "tu-efficientnet_lite2")  # pretrained.LITE_PACKAGES
ENCODER_WEIGHTS = ("imagenet", "lite", None)  # models.WEIGHTS
SCHEDULERS = ("cosine", "cosine_restarts", "onecycle", "none")
SCORER_POLICIES = ("auto", "none", "grid", "global", "per_image", "difficulty")
COVERAGE_BINS = ("empty", "small", "medium", "large")  # datasets.coverage_bin
# train.oversample keys: the coverage bins, and rare_class (K classes: an image drawn more often
# the rarer its rarest present class, pipeline.data.datasets.rare_class_weights).
OVERSAMPLE_KEYS = (*COVERAGE_BINS, "rare_class")
TTA = ("none", "hflip", "vflip")
INPUT_MODES = ("pad", "resize", "tile")
# The largest output stride of smp's encoders (depth 5): a network input side must divide by it.
STRIDE = 32

Problems = list[tuple[str, str]]  # (key, text); the key is relative to the section in check()


def valid(
    *choices: Any,
    min: float | None = None,  # noqa: A002 (named like the constraint it states)
    max: float | None = None,  # noqa: A002
    above: float | None = None,
    below: float | None = None,
    keys: tuple[str, ...] = (),
    nonempty: bool = False,
    distinct: bool = False,
    default: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its valid values: `choices`, bounds (min/max inclusive,
    above/below exclusive), mapping `keys`; for a list or mapping they apply to each item."""
    bounds = {"min": min, "max": max, "above": above, "below": below}
    rule = {"choices": choices, "keys": keys, "nonempty": nonempty, "distinct": distinct}
    rule = {k: v for k, v in rule.items() if v} | {k: v for k, v in bounds.items() if v is not None}
    return dataclasses.field(default=default, metadata={"valid": rule})


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _names(choices: tuple) -> str:
    return ", ".join("null" if c is None else str(c) for c in choices)


def _num(x: float) -> str:
    return f"{x:g}"


def _bounds(rule: dict) -> str:
    lo = f"[{_num(rule['min'])}" if "min" in rule else f"({_num(rule['above'])}" if "above" in rule else None
    hi = f"{_num(rule['max'])}]" if "max" in rule else f"{_num(rule['below'])})" if "below" in rule else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1:]}"
    return f"{'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"


def _item(key: str, value: Any, rule: dict) -> Problems:
    if "choices" in rule and value not in rule["choices"]:
        return [(key, f"got {_show(value)}, must be one of {_names(rule['choices'])}")]
    if not {"min", "above", "max", "below"} & set(rule):
        return []
    lo_ok = value >= rule.get("min", -math.inf) and value > rule.get("above", -math.inf)
    hi_ok = value <= rule.get("max", math.inf) and value < rule.get("below", math.inf)
    return [] if lo_ok and hi_ok else [(key, f"got {_show(value)}, must be {_bounds(rule)}")]


def field_problems(key: str, value: Any, rule: dict) -> Problems:
    """Problems of one field's value under its `valid(...)` rule."""
    entries = f" (valid entries: {_names(rule['choices'])})" if "choices" in rule else ""
    if not isinstance(value, list | dict):
        return _item(key, value, rule)
    if rule.get("nonempty") and not value:
        return [(key, f"got {_show(value)}, must not be empty{entries}")]
    if isinstance(value, dict):
        out = [(key, f"got key {k!r}, must be one of {_names(rule['keys'])}") for k in value if "keys" in rule and k not in rule["keys"]]
        return out or [p for k, v in value.items() for p in _item(f"{key}.{k}", v, rule)]
    twice = [v for i, v in enumerate(value) if v in value[:i]]
    if rule.get("distinct") and twice:
        return [(key, f"got {_show(value)}: {twice[0]!r} appears twice; entries must be distinct{entries}")]
    return [p for i, v in enumerate(value) for p in _item(f"{key}[{i}]", v, rule)]

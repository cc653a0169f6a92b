"""Plain config data and typed sections, both ways: YAML dicts merged and built into the
dataclasses of `schema` (an unknown key or a wrong type fails with one line naming the key and
the closest valid one), and a typed config viewed as plain data, as stage keys hash it."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any

from pipeline.config.schema import Config
from pipeline.core.errors import ConfigError


def _closest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return f" (closest valid key: '{match[0]}')" if match else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against annotation `tp`, building nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = typing.get_args(tp)
        return {str(k): _convert(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, data: dict, where: str) -> Any:
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields]
    for key in data:
        if key not in names:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown key '{prefix}{key}'{_closest(str(key), names)}")
    kwargs = {}
    for f in fields:
        sub = f"{where}.{f.name}" if where else f.name
        if f.name in data:
            kwargs[f.name] = _convert(data[f.name], hints[f.name], sub)
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        else:
            raise ConfigError(f"missing key '{sub}' (set it in configs/base.yaml or the experiment file)")
    return cls(**kwargs)


def build_section(cls: type, data: dict, where: str) -> Any:
    """A typed section (dataclass `cls`) from plain data, with the errors of a config load
    (`where` names it: e.g. segment.models.fpn)."""
    return _build(cls, data, where)


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` onto `base`; mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (or any part of it), for hashing and manifests."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("internal")}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# Keys removed from the schema after artifacts were cached with them, with the value of every
# shipped config: the classifier never read them. Stage keys hash `section()`, so they are put
# back there (constant, they add nothing to a key) and existing artifacts keep their keys.
RETIRED: dict[str, Any] = {
    "classify.model.arch": "classifier",
    "classify.model.decoder_channels": [],
    "classify.train.loss": [{"until_epoch": 0, "terms": {"bce": 1.0}, "lr_scale": 1.0}],
    "classify.train.eval_threshold": 0.5,
}


def section(cfg: Config, dotted: str) -> Any:
    """The plain-data value at a dotted path, e.g. 'segment.train', as stage keys hash it."""
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    out = to_dict(obj)
    for key, value in RETIRED.items():
        if key.startswith(f"{dotted}."):
            *parents, leaf = key[len(dotted) + 1 :].split(".")
            target = out
            for part in parents:
                target = target[part]
            target[leaf] = copy.deepcopy(value)
    return out

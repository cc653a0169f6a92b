"""YAML -> typed, validated config.

Values live in configs/base.yaml; an experiment file holds only what differs (and may name
another file as its `base`). The dataclasses in `schema` give each key its type, so an
unknown key or a wrong type fails with one line naming the key and the closest valid one;
then every bad value (pipeline.validate) is listed, one line each.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from pipeline import paths, validate
from pipeline.errors import UserError
from pipeline.schema import Config


class ConfigError(UserError):
    """A config problem, reported to the user as one line."""


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


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise ConfigError(f"{path}: invalid YAML{f' at line {line + 1}' if line is not None else ''}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_raw(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """Read an experiment file merged onto its base chain (default: configs/base.yaml)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular 'base' reference")
    data = _read_yaml(path)
    # Without a `base:` key an experiment file extends configs/base.yaml wherever it lives;
    # `base: null` means a self-contained file.
    default = None if path == paths.BASE_CONFIG.resolve() else paths.BASE_CONFIG
    base_name = data.pop("base", default)
    if base_name is None:
        return data
    base_path = base_name if base_name == default else path.parent / str(base_name)
    base = load_raw(base_path, (*_seen, path))
    return merge(base, data)


def parse_override(text: str) -> dict:
    """Turn 'a.b.c=value' into {'a': {'b': {'c': value}}}; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. segment.train.epochs=3")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {dotted}: value {raw!r} is not valid YAML") from exc
    out: dict = value
    for part in reversed(dotted.strip().split(".")):
        if not part:
            raise ConfigError(f"--set {text!r}: empty key segment")
        out = {part: out}
    return out


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, merge and validate a config; `overrides` are 'a.b=value' strings."""
    path = Path(path)
    raw = load_raw(path)
    for text in overrides:
        raw = merge(raw, parse_override(text))
    exp = raw.setdefault("experiment", {})
    if isinstance(exp, dict) and not exp.get("name"):
        exp["name"] = path.stem
    cfg = _build(Config, raw, "")
    problems = validate.problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    cfg.source = str(path)
    return cfg


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


def dump(cfg: Config) -> str:
    """Resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

"""YAML -> typed, validated config.

Values live in configs/base.yaml; an experiment file holds only what differs (and may name
another file as its `base`). The dataclasses in `schema` give each key its type, so an
unknown key or a wrong type fails with one line naming the key and the closest valid one;
then every bad value (pipeline.config.validate) is listed, one line each.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.config import validate
from pipeline.config.schema import Config
from pipeline.config.typed import _build, merge, to_dict
from pipeline.core import paths
from pipeline.core.errors import ConfigError


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
    cfg = _checked(raw, path.stem)
    cfg.source = str(path)
    return cfg


def load_dict(data: dict, name: str) -> Config:
    """An experiment given as a mapping (what an experiment file holds), merged onto
    configs/base.yaml and validated as `load` validates a file."""
    return _checked(merge(load_raw(paths.BASE_CONFIG), data), name)


def _checked(raw: dict, name: str) -> Config:
    exp = raw.setdefault("experiment", {})
    if isinstance(exp, dict) and not exp.get("name"):
        exp["name"] = name
    cfg = _build(Config, raw, "")
    problems = validate.problems(cfg)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def dump(cfg: Config) -> str:
    """Resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

"""Config plumbing: yaml presets -> nested dicts -> frozen dataclasses, with clear errors.

A config file names a game, a family and presets (tiny / small / base). `resolve_config` picks
the preset, applies `--set key=value` overrides and returns one nested dict; each component turns
its section into its own frozen dataclass with `from_dict`, which rejects unknown keys by name.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml

from engine.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file or override that cannot be used; the message is one line for the user."""


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`, naming any unknown key and its closest valid spelling."""
    data = dict(data or {})
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{where}{key}'{hint}")
    hints = {f.name: f.type for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in list(data.items()):
        if isinstance(value, list) and "tuple" in str(hints[key]):
            data[key] = tuple(value)
    return cls(**data)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as yaml) to a nested dict copy."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        node = config
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"unknown config section '{part}' in --set {key}")
            node = child
        if parts[-1] not in node and len(parts) > 1:
            close = difflib.get_close_matches(parts[-1], list(node), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        node[parts[-1]] = _parse_value(text)
    return config


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid yaml: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


def resolve_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Read a config file, select its preset and apply overrides.

    File layout: top-level keys (`game`, `family`, `preset`, shared sections) plus `presets:
    {tiny: {...}, small: {...}, base: {...}}`; the chosen preset is merged over the shared
    sections. `--set preset=tiny` picks another preset.
    """
    raw = load_yaml(path)
    preset_overrides = [o for o in overrides if o.startswith("preset=")]
    rest = [o for o in overrides if not o.startswith("preset=")]
    presets = raw.pop("presets", {}) or {}
    name = raw.get("preset", "small")
    for item in preset_overrides:
        name = item.split("=", 1)[1].strip()
    if presets:
        if name not in presets:
            raise ConfigError(f"unknown preset '{name}' in {path}; choose one of {', '.join(presets)}")
        raw = deep_merge(raw, presets[name])
    raw["preset"] = name
    return apply_overrides(raw, rest)

"""Config plumbing: yaml presets -> nested dicts -> frozen dataclasses, with clear errors.

A config file names a game, a family and presets (tiny / small / base). `resolve_config` picks
the preset, applies `--set key=value` overrides and returns one nested dict; each component turns
its section into its own frozen dataclass with `from_dict`, which rejects unknown keys by name.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import typing
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
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved here: check nothing
        hints = {}
    for key, value in list(data.items()):
        data[key] = _checked(value, hints.get(key), f"{where}{key}")
    return cls(**data)


def _checked(value: Any, hint: Any, name: str) -> Any:
    """`value` as the field type `hint` wants it, or ConfigError naming the key (e.g. lr='abc').

    yaml reads `1e-4` as a string (it wants `1.0e-4`), so numeric strings are accepted for floats.
    Types this does not know (nested configs, Any) pass through unchanged.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
    elif origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        value = tuple(_checked(v, item, f"{name}[{i}]") for i, v in enumerate(value)) if item else tuple(value)
    elif origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
    return value


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
        # A run saved before a setting existed lacks its key; the model and train sections are
        # checked field by field when built (`from_dict`), which still names a misspelt key.
        settable = parts[0] in ("model", "train") and len(parts) > 1
        if parts[-1] not in node and len(parts) > 1 and not settable:
            close = difflib.get_close_matches(parts[-1], list(node), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        value = _parse_value(text)
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"'{key}' is a config section, not a value; set one of its keys "
                              f"({', '.join(f'{key}.{k}' for k in list(node[parts[-1]])[:3])}, ...)")
        node[parts[-1]] = value
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
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError) as err:
        raise ConfigError(f"{path} is not a readable yaml text file ({type(err).__name__})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid yaml: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    return data


RUN_ONLY_KEYS = ("format_version", "data", "events", "stats")


def run_recipe(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's saved config.yaml as a config file: the model and train sections it was trained
    with, its game by name. What the run learned from (data, events, stats) is not a setting.
    Config files pass through unchanged."""
    if "format_version" not in raw and not isinstance(raw.get("game"), dict):
        return raw
    out = {k: v for k, v in raw.items() if k not in RUN_ONLY_KEYS}
    if isinstance(out.get("game"), dict):  # a run stores the whole GameSpec
        out["game"] = out["game"].get("name")
    return out


def resolve_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Read a config file, select its preset and apply overrides.

    File layout: top-level keys (`game`, `family`, `preset`, shared sections) plus `presets:
    {tiny: {...}, small: {...}, base: {...}}`; the chosen preset is merged over the shared
    sections. `--set preset=tiny` picks another preset. `path` may also be a run directory or
    its config.yaml: training goes on with the recipe that run was trained with.
    """
    if Path(path).is_dir():  # a run directory: its config.yaml
        from models.checkpoint import CONFIG_FILE  # torch-heavy module: only for runs

        path = Path(path) / CONFIG_FILE
    raw = run_recipe(load_yaml(path))
    preset_overrides = [o for o in overrides if o.startswith("preset=")]
    rest = [o for o in overrides if not o.startswith("preset=")]
    presets = raw.pop("presets", {}) or {}
    name = raw.get("preset", "small")
    for item in preset_overrides:
        name = item.split("=", 1)[1].strip()
    if not presets and preset_overrides and name != raw.get("preset", "small"):
        raise ConfigError(f"{path} has no presets to choose from (a run's config is one preset, "
                          f"{raw.get('preset')!r}); leave out --set preset or use a config file")
    if presets:
        if name not in presets:
            raise ConfigError(f"unknown preset '{name}' in {path}; choose one of {', '.join(presets)}")
        raw = deep_merge(raw, presets[name])
    raw["preset"] = name
    return apply_overrides(raw, rest)

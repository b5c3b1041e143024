"""Run directories: save a trained world model atomically, load it back with one call.

A run directory holds
  model.safetensors      EMA weights ("model.<name>"), real start contexts ("start.frames"
                         (K, C, 3, H, W) uint8, "start.actions" (K, C-1) long) and the mean
                         training-paraphrase embedding of each event ("events.<name>" (384,)).
  config.yaml            format_version, family, preset, game (GameSpec fields), model, sampler,
                         train, data summary, events {names, trained}, stats {step, ...}.
These two are everything play needs. For resuming, apart:
  train_state.safetensors  raw weights ("model.*"), EMA weights ("ema.*"), the optimizer state
                           flattened to tensors ("optim.<param>.<key>"), RNG states.
  train_state.yaml         step, stage, stage_step, optimizer param groups: a readable copy of
                           the record the safetensors metadata holds (which is what resume reads).

Every file is written to a temporary name, flushed and moved into place with os.replace, so a
kill at any moment leaves either the previous or the next version of each file. Safetensors and
yaml only: never pickle, never torch.load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from engine.errors import UserError
from engine.simulator import GameSpec

FORMAT_VERSION = 1
"""Bumped whenever the run layout changes in a way older readers cannot follow."""

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
STATE_FILE = "train_state.safetensors"
STATE_YAML = "train_state.yaml"


@dataclass
class LoadedRun:
    """What `load_run` returns: a ready model plus what play needs to start it."""

    model: torch.nn.Module
    """The world model with EMA weights, in eval mode, float32, on the requested device."""
    config: dict[str, Any]
    spec: GameSpec
    start_frames: torch.Tensor
    """(K, C, 3, H, W) uint8 real start contexts at the model's resolution."""
    start_actions: torch.Tensor
    """(K, C-1) long actions between the start frames."""
    event_bank: dict[str, np.ndarray]
    """Event name -> (384,) unit mean embedding of its training paraphrases (empty: no events)."""
    run_dir: Path


@dataclass
class TrainState:
    """Everything beyond the playable weights that resuming needs."""

    step: int
    stage: int
    stage_step: int
    model: dict[str, torch.Tensor]
    """Raw (non-EMA) weights, full precision."""
    ema: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    """`torch.optim.Optimizer.state_dict()` output."""
    rng: dict[str, torch.Tensor]
    """"cpu" and, when present, "cuda" RNG states as uint8 tensors."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Plain yaml-able values (accumulated wall-clock, ...)."""


# ----------------------------------------------------------------------------- atomic writes


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates files 0600; runs are meant to be shared
    os.replace(tmp, final)


def dedupe(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split tensors that are views of the same memory (a module registered under two names,
    e.g. a U-Net also held by its preconditioner) into unique ones plus {alias: stored name}."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name, value in tensors.items():
        key = (value.device, value.data_ptr(), tuple(value.shape), tuple(value.stride()), value.dtype)
        if value.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            unique[name] = value
    return unique, aliases


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    unique, aliases = dedupe(tensors)
    # safetensors refuses shared or non-contiguous storage: give it independent copies.
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in unique.items()}
    save_file(clean, str(tmp), metadata={**meta, "aliases": json.dumps(aliases)})
    _fsync_replace(tmp, path)


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    _fsync_replace(tmp, path)


def spec_to_dict(spec: GameSpec) -> dict[str, Any]:
    d = dataclasses.asdict(spec)
    d["action_meanings"] = list(spec.action_meanings)
    return d


def spec_from_dict(d: dict[str, Any]) -> GameSpec:
    names = {f.name for f in dataclasses.fields(GameSpec)}
    known = {k: v for k, v in d.items() if k in names}
    known["action_meanings"] = tuple(known.get("action_meanings", ()))
    return GameSpec(**known)


def playable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict with detached tensors (what goes under "model.")."""
    return {k: v.detach() for k, v in model.state_dict().items()}


def save_run(run_dir: str | Path, *, ema_model: torch.nn.Module, config: dict[str, Any],
             spec: GameSpec, start_frames: torch.Tensor, start_actions: torch.Tensor,
             event_bank: dict[str, np.ndarray], stats: dict[str, Any],
             train_state: TrainState | None = None, save_dtype: str = "float32") -> Path:
    """Write (or update) a run directory atomically.

    Args:
        ema_model: the weights play uses (EMA copy of the trained model).
        config: resolved config (family, preset, model, sampler, train, data, events sections).
        start_frames: (K, C, 3, H, W) uint8; start_actions: (K, C-1) long.
        event_bank: name -> (384,) mean paraphrase embedding per event the model saw.
        stats: step, wall-clock seconds, device, ...
        train_state: when given, the resume files are written too (before the playable ones).
        save_dtype: "float32" or "bfloat16" storage for floating weights in model.safetensors.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if save_dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"train.save_dtype must be float32, bfloat16 or float16, not '{save_dtype}'")
    store = getattr(torch, save_dtype)
    step = str(int(stats.get("step", 0)))

    if train_state is not None:
        tensors: dict[str, torch.Tensor] = {}
        tensors.update({f"model.{k}": v for k, v in train_state.model.items()})
        tensors.update({f"ema.{k}": v for k, v in train_state.ema.items()})
        tensors.update({f"rng.{k}": v for k, v in train_state.rng.items()})
        opt_state = train_state.optimizer.get("state", {})
        for idx, entries in opt_state.items():
            for key, value in entries.items():
                tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
                  for g in train_state.optimizer.get("param_groups", [])]
        info = {"format_version": FORMAT_VERSION, "step": train_state.step, "stage": train_state.stage,
                "stage_step": train_state.stage_step, "param_groups": groups, **train_state.extra}
        # The safetensors metadata carries the same record, so the tensors file alone is enough
        # to resume (a kill between the two renames leaves a stale yaml, which is then ignored).
        _write_safetensors(run_dir / STATE_FILE, tensors,
                           {"format_version": str(FORMAT_VERSION), "step": str(train_state.step),
                            "state": json.dumps(info)})
        _write_yaml(run_dir / STATE_YAML, info)

    weights, aliases = dedupe(playable_state_dict(ema_model))
    tensors = {}
    for name, value in weights.items():
        tensors[f"model.{name}"] = value.to(store) if value.is_floating_point() else value
    for name, target in aliases.items():  # stored once, named again through the aliases entry
        tensors[f"model.{name}"] = tensors[f"model.{target}"]
    tensors["start.frames"] = start_frames.to(torch.uint8)
    tensors["start.actions"] = start_actions.to(torch.long)
    for name, vec in event_bank.items():
        tensors[f"events.{name}"] = torch.as_tensor(np.asarray(vec, dtype=np.float32))
    _write_safetensors(run_dir / MODEL_FILE, tensors,
                       {"format_version": str(FORMAT_VERSION), "step": step})

    out = dict(config)
    out["format_version"] = FORMAT_VERSION
    out["game"] = spec_to_dict(spec)
    out["stats"] = dict(stats)
    # Keep the file's key order stable and readable: version and identity first.
    order = ["format_version", "family", "preset", "game"]
    out = {**{k: out[k] for k in order if k in out}, **{k: v for k, v in out.items() if k not in order}}
    _write_yaml(run_dir / CONFIG_FILE, out)
    return run_dir


# ----------------------------------------------------------------------------- reading


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise UserError(f"{path.parent} is not a complete run: {path.name} is missing")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        for alias, target in json.loads(meta.get("aliases", "{}")).items():
            tensors[alias] = tensors[target]
    except Exception as err:  # safetensors raises its own error types for every corruption
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"{path} is truncated or corrupt ({first[:120]})") from None
    return tensors, meta


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate RUN/config.yaml (format version, required sections)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"checkpoint not found: {run_dir}")
    if not run_dir.is_dir():
        raise UserError(f"checkpoint must be a run directory, not a file: {run_dir}")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} is not a complete run: {CONFIG_FILE} is missing")
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid yaml: {str(err).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a run config (no mapping at the top level)")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{run_dir} has checkpoint format {version!r}; this version reads format "
                        f"{FORMAT_VERSION} (retrain it with this version)")
    for key in ("family", "game", "model"):
        if key not in config:
            raise UserError(f"{path} lacks the '{key}' section")
    if not isinstance(config["game"], dict) or "name" not in config["game"]:
        raise UserError(f"{path}: 'game' must hold the game spec fields")
    return config


def check_game(run_dir: Path, spec: GameSpec, expect_game: str | None) -> None:
    if expect_game is not None and spec.name != expect_game:
        raise UserError(f"{run_dir} is a {spec.name} model, not {expect_game}")


def load_run(run_dir: str | Path, device: str | torch.device = "cpu",
             expect_game: str | None = None) -> LoadedRun:
    """Load a run for play or evaluation; every defect becomes a one-line UserError.

    Args:
        run_dir: the run directory written by `save_run`.
        device: where to put the model.
        expect_game: when given, a run of another game is refused.
    """
    from models.registry import build_model

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    try:
        spec = spec_from_dict(config["game"])
    except (TypeError, ValueError) as err:
        raise UserError(f"{run_dir}/{CONFIG_FILE}: bad game section ({err})") from None
    check_game(run_dir, spec, expect_game)
    tensors, meta = _read_safetensors(run_dir / MODEL_FILE)
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise UserError(f"{run_dir}/{MODEL_FILE} has checkpoint format {meta.get('format_version')!r}; "
                        f"this version reads format {FORMAT_VERSION}")
    model = build_model(config, spec)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_weights(model, weights, f"{run_dir}/{MODEL_FILE}")
    model.to(device).eval()
    for key in ("start.frames", "start.actions"):
        if key not in tensors:
            raise UserError(f"{run_dir}/{MODEL_FILE} lacks '{key}' (no start contexts to play from)")
    bank = {k[len("events."):]: v.float().numpy() for k, v in tensors.items() if k.startswith("events.")}
    return LoadedRun(model=model, config=config, spec=spec, start_frames=tensors["start.frames"],
                     start_actions=tensors["start.actions"].long(), event_bank=bank, run_dir=run_dir)


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Copy `weights` into `model`, refusing any missing, extra or mis-shaped tensor by name."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    extra = sorted(set(weights) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise UserError(f"weights in {where} do not match the model its config describes: {', '.join(parts)}")
    for name, value in weights.items():
        if tuple(own[name].shape) != tuple(value.shape):
            raise UserError(f"weights in {where} do not match the model its config describes: "
                            f"{name} has shape {tuple(value.shape)}, the model wants {tuple(own[name].shape)}")
    with torch.no_grad():
        for name, value in weights.items():
            own[name].copy_(value.to(own[name].dtype))


def load_train_state(run_dir: str | Path) -> TrainState | None:
    """The resume files of a run, or None when the run has none."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    tensors, meta = _read_safetensors(path)
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise UserError(f"{path} has checkpoint format {meta.get('format_version')!r}; "
                        f"this version reads format {FORMAT_VERSION}")
    try:
        info = json.loads(meta["state"])
    except (KeyError, ValueError):
        raise UserError(f"{path} lacks its training-state record (not written by save_run)") from None
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    rng = {k[4:]: v for k, v in tensors.items() if k.startswith("rng.")}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in info.get("param_groups", []):
        g = dict(g)
        for k, v in g.items():
            if isinstance(v, list) and k != "params":
                g[k] = tuple(v)
        groups.append(g)
    extra = {k: v for k, v in info.items()
             if k not in ("format_version", "step", "stage", "stage_step", "param_groups")}
    return TrainState(step=int(info["step"]), stage=int(info.get("stage", 0)),
                      stage_step=int(info.get("stage_step", 0)), model=model, ema=ema,
                      optimizer={"state": state, "param_groups": groups}, rng=rng, extra=extra)


def has_run(run_dir: str | Path) -> bool:
    """True when RUN already holds a trained model or resume state (so it must not be overwritten)."""
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (MODEL_FILE, CONFIG_FILE, STATE_FILE))

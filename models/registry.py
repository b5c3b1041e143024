"""World-model families by name: the one place a config's `family:` turns into a class.

An explicit dict (no string-to-class import tricks), so an IDE can follow every entry. A family
whose module is not in this installation is left out with the reason kept for the error message.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from engine.errors import UserError
from engine.simulator import GameSpec

FAMILIES: dict[str, Any] = {}
"""Family name -> class with `from_config(config: dict, spec: GameSpec) -> nn.Module`."""

_MISSING: dict[str, str] = {}
"""Family name -> why it is not available."""


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# Each import is guarded only against its own module being absent (a family not yet part of this
# installation); a real error inside a family's module still surfaces as itself.
if _module_present("models.diffusion_world"):
    from models.diffusion_world import DiffusionWorldModel

    FAMILIES["diffusion"] = DiffusionWorldModel
else:
    _MISSING["diffusion"] = "models/diffusion_world.py is not installed"

if _module_present("models.ar_world"):
    from models.ar_world import ARWorldModel

    FAMILIES["autoregressive"] = ARWorldModel
else:
    _MISSING["autoregressive"] = "models/ar_world.py is not installed"


def build_model(config: dict[str, Any], spec: GameSpec) -> torch.nn.Module:
    """Build the (untrained) world model a resolved config describes.

    Args:
        config: resolved config with `family` and `model` sections.
        spec: the game the model plays (number of actions, name).
    """
    family = config.get("family")
    if family in _MISSING:
        raise UserError(f"model family '{family}' is not available: {_MISSING[family]}")
    if family not in FAMILIES:
        known = ", ".join(sorted(set(FAMILIES) | set(_MISSING)))
        raise UserError(f"unknown model family '{family}'; choose one of {known}")
    model: torch.nn.Module = FAMILIES[family].from_config(config, spec)
    return model

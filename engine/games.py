"""The game registry: every ALE game by short name, plus CarRacing, and the one factory for them.

`list_games()` is derived from the ROMs that ship with ale-py (not a hand list), `find_game`
turns what a user typed into a `GameSpec`, and `make_simulator` builds the real game behind it.

    >>> spec = find_game("Ms-Pacman")      # case, '_' and '-' do not matter
    >>> sim = make_simulator("breakout", seed=0)
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import UserError
from engine.simulator import GameSpec

if TYPE_CHECKING:
    from engine.real import AtariSimulator, CarRacingSimulator

CARRACING = "carracing"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
GAMES_YAML = ASSETS / "games.yaml"

ATARI_HZ = 60
"""The Atari 2600 (NTSC) emulator runs 60 frames per second of game time."""
ALE_SAMPLES_PER_FRAME = 512
"""ALE's TIA sound keeps 512 uint8 samples per emulated frame (getAudio())."""
ALE_AUDIO_RATE = ATARI_HZ * ALE_SAMPLES_PER_FRAME
"""30720 Hz: 512 samples per 1/60 s frame. The TIA's nominal rate is ~31.4 kHz, but ALE emits a
fixed 512 per frame, so this is the rate at which the stream plays gapless at real speed (ALE's
own WAV exporter writes at the same 60 x 512)."""


@functools.lru_cache(maxsize=1)
def games_config() -> dict[str, Any]:
    """Parsed assets/games.yaml (keymaps, CarRacing action set)."""
    with open(GAMES_YAML, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise UserError(f"{GAMES_YAML} is not a mapping")
    return data


def normalize(name: str) -> str:
    """User spelling -> registry key: lowercase, no '_', '-', ' ' ("Ms_Pacman" -> "mspacman")."""
    return "".join(ch for ch in name.lower() if ch not in "_- ")


@functools.lru_cache(maxsize=1)
def _atari_roms() -> dict[str, str]:
    """Short name -> ale-py ROM id ("mspacman" -> "ms_pacman") for single-player ROMs.

    ale-py also ships a few multiplayer-only ROMs (combat, joust, maze_craze, warlords) that
    the single-agent interface refuses to load; `isSupportedROM` filters them out.
    """
    import ale_py
    from ale_py import roms

    # Logger mode is global and the constructor prints a banner: silence it before building.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    out: dict[str, str] = {}
    for rom_id in roms.get_all_rom_ids():
        path = roms.get_rom_path(rom_id)
        if path is not None and ale.isSupportedROM(path):
            out[normalize(rom_id)] = rom_id
    return out


def list_games() -> list[str]:
    """Every playable game's short lowercase name: all ale-py ROMs, then "carracing"."""
    return sorted(_atari_roms()) + [CARRACING]


def atari_rom_id(name: str) -> str:
    """ale-py ROM id for a registered short name ("mspacman" -> "ms_pacman")."""
    return _atari_roms()[normalize(name)]


def _env_name(rom_id: str) -> str:
    # Same CamelCase rule ale-py uses to register "ALE/<Name>-v5" ids.
    return rom_id.title().replace("_", "")


@functools.cache
def _atari_action_meanings(rom_id: str, full_action_space: bool) -> tuple[str, ...]:
    """Load the ROM once and read its minimal (or the full 18) action set."""
    import ale_py
    from ale_py import roms

    # Logger mode is global and the constructor prints a banner: silence it before building.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    ale = ale_py.ALEInterface()
    ale.loadROM(str(roms.get_rom_path(rom_id)))
    actions = ale.getLegalActionSet() if full_action_space else ale.getMinimalActionSet()
    return tuple(a.name for a in actions)


def carracing_actions() -> list[dict[str, Any]]:
    """The documented discrete CarRacing action set from games.yaml (name, keys, control)."""
    acts = games_config()["carracing"]["actions"]
    return list(acts)


def _unknown(name: str) -> UserError:
    names = list_games()
    close = difflib.get_close_matches(normalize(name), names, n=3, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else f"; no close match among the {len(names)} games (e.g. breakout, pong, mspacman, carracing)"
    )
    return UserError(f"unknown game {name!r}{hint}")


def find_game(
    name: str, *, frameskip: int = 4, action_repeat: int = 2, full_action_space: bool = False
) -> GameSpec:
    """The `GameSpec` for a user-typed game name.

    Args:
        name: short name, any case, '_' / '-' ignored ("breakout", "Ms_Pacman", "carracing").
        frameskip: Atari emulator frames per agent step (60 Hz / frameskip steps per second).
        action_repeat: CarRacing physics ticks (50 Hz) per agent step.
        full_action_space: Atari: all 18 actions instead of the game's minimal set.

    Raises:
        UserError: unknown name (naming up to 3 close matches) or a non-positive skip.
    """
    key = normalize(name)
    if key == CARRACING:
        if action_repeat < 1:
            raise UserError(f"action_repeat must be >= 1, got {action_repeat}")
        cfg = games_config()["carracing"]
        return GameSpec(
            name=CARRACING,
            env_id="CarRacing-v3",
            family="carracing",
            action_meanings=tuple(a["name"] for a in carracing_actions()),
            steps_per_second=float(cfg["physics_hz"]) / action_repeat,
            frameskip=action_repeat,
            audio_rate=0,
        )
    roms = _atari_roms()
    if key not in roms:
        raise _unknown(name)
    if frameskip < 1:
        raise UserError(f"frameskip must be >= 1, got {frameskip}")
    rom_id = roms[key]
    return GameSpec(
        name=key,
        env_id=f"ALE/{_env_name(rom_id)}-v5",
        family="atari",
        action_meanings=_atari_action_meanings(rom_id, full_action_space),
        steps_per_second=ATARI_HZ / frameskip,
        frameskip=frameskip,
        audio_rate=ALE_AUDIO_RATE,
    )


def make_simulator(
    name: str,
    *,
    frameskip: int = 4,
    sticky: float = 0.0,
    action_repeat: int = 2,
    audio: bool = True,
    full_action_space: bool = False,
    seed: int | None = None,
) -> AtariSimulator | CarRacingSimulator:
    """Build the real game `name` as a `Simulator` (engine/simulator.py).

    Args:
        name: a name `find_game` accepts.
        frameskip: Atari frames per step (default 4 -> 15 steps/s).
        sticky: Atari sticky-action probability (ALE v5 uses 0.25; we default to 0 for play).
        action_repeat: CarRacing physics ticks per step (default 2 -> 25 steps/s).
        audio: Atari: keep every frame's 512 samples in Step.audio (False: faster, audio None).
        full_action_space: Atari: the full 18-action set.
        seed: seed of the first reset (later `reset(seed)` calls override it).
    """
    spec = find_game(
        name, frameskip=frameskip, action_repeat=action_repeat, full_action_space=full_action_space
    )
    if not 0.0 <= sticky <= 1.0:
        raise UserError(f"sticky must be a probability in [0, 1], got {sticky}")
    from engine.real import AtariSimulator, CarRacingSimulator

    if spec.family == "carracing":
        return CarRacingSimulator(spec, seed=seed)
    return AtariSimulator(
        spec,
        atari_rom_id(spec.name),
        sticky=sticky,
        audio=audio,
        full_action_space=full_action_space,
        seed=seed,
    )

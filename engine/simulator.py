"""The one protocol every game speaks: the real ALE/CarRacing games and every world model.

The frame loop, recorder, console, split view and evaluation are written once against
`Simulator`, so real and neural play are the same program with another simulator plugged in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Family = Literal["atari", "carracing"]


@dataclass(frozen=True)
class GameSpec:
    """What a game is, independent of who simulates it (the emulator or a world model)."""

    name: str
    """Short name users type: "breakout", "pong", "carracing"."""
    env_id: str
    """Gymnasium id of the real game: "ALE/Breakout-v5", "CarRacing-v3"."""
    family: Family
    action_meanings: tuple[str, ...]
    """Index i is the meaning of discrete action i ("NOOP", "FIRE", "GAS+LEFT", ...)."""
    steps_per_second: float
    """Agent steps per second of game time (Atari 60 Hz / frameskip 4 = 15)."""
    frameskip: int = 4
    """Emulator frames (Atari) or physics ticks (CarRacing action repeat) per agent step."""
    audio_rate: int = 0
    """Audio samples per second of Step.audio; 0 when the game has no sound."""

    @property
    def num_actions(self) -> int:
        return len(self.action_meanings)


@dataclass(frozen=True)
class WorldEvent:
    """A promptable world event that is active: "rain" started by the prompt "make it rain"."""

    name: str
    """Canonical event id from assets/events.yaml ("rain", "night", "ice", ...)."""
    prompt: str = ""
    """The text that started it (what the user typed, or a paraphrase in generated data)."""
    similarity: float = 1.0
    """Cosine similarity between the prompt and the event it was understood as."""
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    """(384,) unit sentence embedding that world models are conditioned on, filled by the console:
    that of the training paraphrase nearest to `prompt`, or of `prompt` itself (Console
    `conditioning`). None: the model looks the event's name up in its own paraphrase bank."""


@dataclass
class Step:
    """What one `Simulator.step` returns."""

    frame: np.ndarray
    """(H, W, 3) uint8 RGB frame after the step."""
    reward: float
    terminated: bool
    truncated: bool
    audio: np.ndarray | None = None
    """(S,) uint8 audio samples produced during the step at `GameSpec.audio_rate`, or None."""
    info: dict[str, Any] = field(default_factory=dict)
    """Extras; well-known keys: "lives" (int), "ms" (float, model time per frame)."""


@runtime_checkable
class Simulator(Protocol):
    """Anything that can be played: `reset` gives the first frame, `step` advances one agent step."""

    spec: GameSpec

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start a new episode and return its first (H, W, 3) uint8 frame."""
        ...

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        """Advance one agent step under the active world events."""
        ...

    def close(self) -> None: ...

"""Held keys -> the game's discrete action, from the keymaps in assets/games.yaml.

Two layers: pygame key names ("w", "up", "space") press abstract keys ("up", "fire"); each
action of a game is a set of abstract keys (ALE "UPRIGHTFIRE" = {up, right, fire}; CarRacing
"GAS+LEFT" = {up, left}). The held combo resolves to the legal action with the largest key set
that is all held, so up+right+fire is UPRIGHTFIRE where the game has it and a legal subset
(UPRIGHT, UPFIRE, ...) where it does not; nothing legal held -> NOOP (action 0).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from engine.games import carracing_actions, games_config
from engine.simulator import GameSpec

ABSTRACT_KEYS = ("up", "down", "left", "right", "fire")


@functools.lru_cache(maxsize=1)
def pygame_key_names() -> dict[str, str]:
    """pygame key name -> abstract key name, e.g. {"w": "up", "up": "up", "space": "fire"}.

    Keys are the strings `pygame.key.name(event.key)` returns (lowercase: "w", "up", "left",
    "space"). A frame loop keeps the set of held pygame names (add on KEYDOWN, discard on
    KEYUP) and passes it to `Keymap.resolve`, which also accepts these names directly;
    `to_abstract` converts explicitly. Names not in the map are ignored.
    """
    out: dict[str, str] = {}
    for abstract, names in games_config()["keys"].items():
        for n in names:
            out[str(n).lower()] = str(abstract)
    return out


def to_abstract(pressed: Iterable[str]) -> set[str]:
    """Abstract key names held, from any mix of abstract and pygame key names."""
    table = pygame_key_names()
    out: set[str] = set()
    for name in pressed:
        n = name.lower()
        if n in ABSTRACT_KEYS:
            out.add(n)
        elif n in table:
            out.add(table[n])
    return out


def _atari_keys(meaning: str) -> frozenset[str]:
    """ALE action meaning -> abstract key set ("UPRIGHTFIRE" -> {up, right, fire}; NOOP -> {})."""
    tokens: dict[str, str] = games_config()["atari"]["tokens"]
    pattern = "|".join(sorted(tokens, key=len, reverse=True))
    parts = re.findall(pattern, meaning)
    if "".join(parts) != meaning and meaning != "NOOP":
        raise ValueError(f"cannot read ALE action meaning {meaning!r}")
    return frozenset(tokens[p] for p in parts)


@dataclass(frozen=True)
class Keymap:
    """The key set of every action of one game; `resolve` picks the action for held keys."""

    action_keys: tuple[frozenset[str], ...]
    """Index i: the abstract keys that together mean action i."""
    action_meanings: tuple[str, ...]

    @classmethod
    def for_spec(cls, spec: GameSpec) -> Keymap:
        """The keymap of a game (Atari from its action meanings, CarRacing from games.yaml)."""
        if spec.family == "carracing":
            by_name = {a["name"]: frozenset(a["keys"]) for a in carracing_actions()}
            keys = tuple(by_name[m] for m in spec.action_meanings)
        else:
            keys = tuple(_atari_keys(m) for m in spec.action_meanings)
        return cls(action_keys=keys, action_meanings=spec.action_meanings)

    def resolve(self, pressed: Iterable[str]) -> int:
        """Action index for the held keys (abstract or pygame names); NOOP (0) if none fits.

        The largest all-held key set wins; among equally large ones the lower action index
        (ALE orders FIRE before directions, and directions before diagonals).
        """
        held = to_abstract(pressed)
        best, best_size = self.noop, 0
        for i, keys in enumerate(self.action_keys):
            if keys and keys <= held and len(keys) > best_size:
                best, best_size = i, len(keys)
        return best

    @property
    def noop(self) -> int:
        """Index of the action that presses nothing (NOOP; 0 in ALE and our CarRacing set)."""
        return next((i for i, k in enumerate(self.action_keys) if not k), 0)

    def describe(self) -> list[tuple[str, str]]:
        """(action meaning, keys) rows for a help screen / controls table."""
        table = games_config()["keys"]
        rows = []
        for meaning, keys in zip(self.action_meanings, self.action_keys):
            desc = " + ".join("/".join(table[k]) for k in sorted(keys)) or "(nothing)"
            rows.append((meaning, desc))
        return rows

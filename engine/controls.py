"""Keyboard state apart from the frame loop: pygame key events -> held abstract keys.

The loop reads events every display frame (~60 Hz) but steps the game at its own rate
(15 steps/s for Atari), so a tap can begin and end between two steps; `take()` makes such
taps count for the next step instead of losing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class InputState:
    """pygame key events -> the set of abstract keys ("up", "fire", ...) held for the next step.

    A key pressed and released between two simulator steps (a tap shorter than one step)
    still counts for the next step: `take()` returns held keys plus keys tapped since the
    previous `take()`.
    """

    def __init__(self, key_names: Mapping[str, str]) -> None:
        self.key_names = dict(key_names)
        """pygame key name (pygame.key.name) -> abstract key name."""
        self._held: dict[str, str] = {}  # physical key -> abstract key, while down
        self._tapped: set[str] = set()

    def handle(self, event: Any) -> bool:
        """Update from one pygame event; True if it was a game key."""
        import pygame

        if event.type in (pygame.KEYDOWN, pygame.KEYUP):
            name = pygame.key.name(event.key)
            abstract = self.key_names.get(name)
            if abstract is None:
                return False
            if event.type == pygame.KEYDOWN:
                self._held[name] = abstract
                self._tapped.add(abstract)
            else:
                self._held.pop(name, None)
            return True
        if event.type == pygame.WINDOWFOCUSLOST:  # releases outside the window never arrive
            self.clear()
        return False

    @property
    def pressed(self) -> set[str]:
        return set(self._held.values())

    def take(self) -> set[str]:
        """Keys for the next step: held now, or tapped since the last call."""
        keys = self.pressed | self._tapped
        self._tapped.clear()
        return keys

    def clear(self) -> None:
        self._held.clear()
        self._tapped.clear()

"""train.object_bounce_fraction: windows whose target shows the object off the straight line
through its last two sightings in the context (models/object_windows.py), on frames drawn by
hand, where the right answer is known."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.data import EpisodeArrays
from models.object_windows import ObjectRegion, find_object_windows

BALL = ObjectRegion(rows=(0.47, 0.875), cols=(0.0625, 0.9375), channel=0, above=60)


def episode(path: Sequence[tuple[int, int] | None], events: tuple[int, ...] = ()) -> EpisodeArrays:
    """An episode of 64x64 frames, black but for a red pixel at each (row, col) of `path`
    (None: no ball), with an event on at the steps in `events`."""
    frames = np.zeros((len(path), 3, 64, 64), np.uint8)
    for k, spot in enumerate(path):
        if spot is not None:
            frames[k, 0, spot[0], spot[1]] = 90
    n = len(path) - 1
    on = np.zeros((n, 1), bool)
    on[list(events)] = True
    return EpisodeArrays(0, frames, np.zeros(n, np.int64), np.zeros(n, np.float32),
                         np.zeros(n, np.float32), on)


def bounces(ep: EpisodeArrays, window: int = 4) -> list[int]:
    return find_object_windows([(ep, 0, ep.num_steps - window + 1)], BALL, window).bounce.tolist()


# Down 2 rows a step from row 40 to the paddle, hidden in its rows for a frame, then back up;
# one column right each step.
RETURN: list[tuple[int, int] | None] = [(40 + 2 * k, 10 + k) for k in range(8)] + [None] + \
    [(54 - 2 * k, 19 + k) for k in range(4)]


def test_a_return_off_the_paddle_is_a_bounce_and_flight_is_not() -> None:
    # Frame 9 (the ball back at row 54) is the one the line through frames 6 and 7 misses by 4
    # rows: the window ending there (start 5) is the only bounce. The next target (row 52)
    # lies 2 rows off the line through frames 7 and 9, within the jitter allowed.
    assert bounces(episode(RETURN)) == [5]
    straight = [(30 + k, 10 + 2 * k) for k in range(12)]
    assert bounces(episode(straight)) == []


def test_a_wall_rebound_is_a_bounce_but_not_under_an_event() -> None:
    # Right 3 columns a step into the right wall, then back left: the column leaves the line.
    rebound = [(40, 40 + 3 * k) for k in range(6)] + [(40, 52 - 3 * k) for k in range(4)]
    assert bounces(episode(rebound)) == [2]
    # An event on during the window's steps (weather over the field passes the pixel test).
    assert bounces(episode(rebound, events=(3,))) == []


def test_one_sighting_is_no_line() -> None:
    # The serve: a ball appears after frames without one; nothing to extrapolate from.
    serve: list[tuple[int, int] | None] = [None] * 5 + [(38, 30), (40, 29), (42, 28)]
    assert bounces(episode(serve)) == []

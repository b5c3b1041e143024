"""Reading Breakout's paddle, ball and bricks from a frame alone, at any resolution.

A world model has no RAM to read, so a player of neural Breakout (engine/autopilot.py) and the
closed-loop benchmark (benchmarks/neural_play.py) find the objects in the pixels. Positions
are shares of the frame's width and height, so the same code reads the emulator's 210x160
frames and a model's 64x64 ones.

Where things are in the Atari frame (210 rows x 160 columns): the side walls are 8 columns
wide; the brick wall fills rows 57-92; the paddle, rows 189-192; the ball (2x4 pixels) flies
between them. Paddle and ball share one colour, (200, 72, 72): red well above green, which
the grey walls and the black field are not. At 64x64 the ball is one or two pixels at about
40% of that colour (red minus green 20-80), a model's often less.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WALL = 8 / 160
BRICKS = (57 / 210, 93 / 210)
BAND = (96 / 210, 189 / 210)
PADDLE = (189 / 210, 194 / 210)
BALL_REDNESS = 20
"""Red minus green (0-255) above which a field pixel counts as the ball."""
PADDLE_REDNESS = 30
BRICK_COLUMNS = 18  # bricks per row: 144 columns between the walls, 8 each
BRICK_GRAY = 110
"""Mean grey level of a brick (its colours run from 101 to 121)."""


@dataclass(frozen=True)
class BreakoutObjects:
    """What one frame shows; x and y are shares of the frame's width and height (0-1)."""

    paddle_x: float | None
    """Centre of the paddle, or None when no paddle pixel is lit."""
    ball: tuple[float, float] | None
    """(x, y) of the field's reddest pixel, or None when none passes BALL_REDNESS."""
    wall: np.ndarray
    """(18,) the brick wall's grey level summed over each brick-wide column, in bricks (a full
    column: 6): one column falls by about 1 when a brick breaks, whether or not the brick lines
    up with a resized frame's pixels, while a dimming of the whole frame moves each column little."""


def _rows(h: int, span: tuple[float, float], inner: bool = False) -> slice:
    """The rows of an h-row frame that touch `span` (shares of the height), or with `inner` only
    those wholly inside it (so the field's rows hold no resized paddle or brick)."""
    lo, hi = h * span[0], h * span[1]
    if inner:
        return slice(math.ceil(lo - 1e-6), math.floor(hi + 1e-6))
    return slice(math.floor(lo + 1e-6), math.ceil(hi - 1e-6))


def read_breakout(frame: np.ndarray) -> BreakoutObjects:
    """frame: (H, W, 3) uint8 RGB Breakout frame of any size."""
    h, w = frame.shape[:2]
    side = math.ceil(w * WALL - 1e-6)  # side-wall columns left out
    field = np.asarray(frame[:, side: w - side], dtype=np.int16)  # (H, W - 2 side, 3)
    redness = field[..., 0] - field[..., 1]  # (H, W')

    paddle = redness[_rows(h, PADDLE)]
    cols = np.nonzero((paddle > PADDLE_REDNESS).any(0))[0]
    paddle_x = None if cols.size == 0 else (side + cols.mean() + 0.5) / w

    band_rows = _rows(h, BAND, inner=True)
    band = redness[band_rows]
    ball = None
    if band.size and band.max() > BALL_REDNESS:
        y, x = np.unravel_index(int(band.argmax()), band.shape)
        ball = ((side + x + 0.5) / w, (band_rows.start + y + 0.5) / h)

    brick_area = 8 / 160 * w * 6 / 210 * h  # pixels one 8x6 brick covers at this size
    per_col = np.asarray(frame[_rows(h, BRICKS)], np.float64).mean(-1).sum(0) / (BRICK_GRAY * brick_area)  # (W,)
    cum = np.concatenate([[0.0], np.cumsum(per_col)])  # bricks left of each pixel edge
    edges = w * (WALL + np.arange(BRICK_COLUMNS + 1) * (1 - 2 * WALL) / BRICK_COLUMNS)
    wall_bricks = np.diff(np.interp(edges, np.arange(w + 1), cum))  # fractional pixels split linearly
    return BreakoutObjects(paddle_x, ball, wall_bricks)

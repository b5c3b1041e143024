"""Where a game's small moving object is, and the training windows that show it.

A pixel test (`ObjectRegion`) finds Breakout's ball in recorded frames; `find_object_windows`
lists, in one pass over an episode's frames, the windows `models.windows.WindowSampler` draws
more often than a uniform draw would: the ball in flight, the ball about to meet the paddle or
the wall, the serve, and the bounce. Each kind fixes a failure measured in closed-loop play
(docs/RESULTS.md, "What it takes to learn the ball" and after).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.config import ConfigError, from_dict
from models.data import EpisodeArrays

BOUNCE_LOOKBACK = 4
"""Context frames before the target searched for the object's last two sightings (the diffusion
model's four context frames: what it has to go on)."""
BOUNCE_OFF = 2 / 64
"""A target sighting further than this share of the frame's side (2 pixels at 64x64) from the
straight line through the last two sightings, in rows or columns, makes a bounce. Where the
last two context frames of a clear window of data/breakout show the ball, the line ends within
one pixel of the target's sighting in 96% of them (the brightest pixel jitters by one as the
ball crosses pixel edges)."""


@dataclass(frozen=True)
class ObjectRegion:
    """Where a game's small moving object shows (`train.object_region`): a frame has it in play
    when some pixel of the region has `channel` above `above`.

    Breakout's ball is one pixel of 4,096 at 64x64 (red peak ~95 of 255): between the brick wall
    and the paddle it is the only red there is. rows and cols are fractions of the frame's height
    and width, so one region serves every resolution.
    """

    rows: tuple[float, ...] = (0.0, 1.0)
    cols: tuple[float, ...] = (0.0, 1.0)
    channel: int = 0
    above: int = 0

    @staticmethod
    def parse(data: dict[str, Any]) -> ObjectRegion:
        region = from_dict(ObjectRegion, data, "train.object_region.")
        for name in ("rows", "cols"):
            lo_hi = getattr(region, name)
            if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 1:
                raise ConfigError(f"train.object_region.{name} must be [start, end] fractions with "
                                  f"0 <= start < end <= 1, got {list(lo_hi)}")
        if region.channel not in (0, 1, 2) or not 0 <= region.above < 255:
            raise ConfigError("train.object_region wants channel 0, 1 or 2 (red, green, blue) and "
                              f"above in [0, 255), got channel {region.channel}, above {region.above}")
        return region

    def __str__(self) -> str:
        colour = ("red", "green", "blue")[self.channel]
        return (f"rows {self.rows[0]:g}-{self.rows[1]:g}, cols {self.cols[0]:g}-{self.cols[1]:g}, "
                f"{colour} above {self.above}")

    def _patch(self, frames: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(N, 3, R, R) frames -> `channel` inside the region (N, h, w), and its top and left."""
        r = frames.shape[-1]
        top, bottom = (round(f * r) for f in self.rows)
        left, right = (round(f * r) for f in self.cols)
        return np.asarray(frames[:, self.channel, top:bottom, left:right]), top, left

    def sight(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(N, 3, R, R) uint8 frames -> whether the object shows in the region (N,) bool, and the
        row and column (N,) of the brightest pixel of `channel` there: where it is when it shows.
        One read of the region answers both."""
        patch, top, left = self._patch(frames)
        flat = patch.reshape(len(patch), -1)  # (N, h*w)
        if flat.shape[1] == 0:  # a region too thin to hold a pixel at this resolution
            none = np.zeros(len(flat), np.int64)
            return np.zeros(len(flat), bool), none, none
        brightest = flat.argmax(1)
        row, col = np.divmod(brightest, patch.shape[-1])
        return flat[np.arange(len(flat)), brightest] > self.above, row + top, col + left

    def in_play(self, frames: np.ndarray) -> np.ndarray:
        """(N, 3, R, R) uint8 frames -> (N,) bool: the object shows in the region."""
        return self.sight(frames)[0]


@dataclass(frozen=True)
class ObjectWindows:
    """Flat window indices (`WindowSampler`'s numbering) of clear windows (no event on in any
    step: weather drawn over the region would pass its pixel test) of T steps, by what their
    frames show of the object."""

    every: np.ndarray
    """In all T+1 frames: flight (`train.object_fraction`)."""
    last: np.ndarray
    """In the last context frame T-1, wherever the target is: flight, and the ball meeting the
    paddle or the wall, or missed (`train.object_crop`)."""
    appear: np.ndarray
    """In the target frame T and in none before: the serve (`train.object_appear_fraction`)."""
    bounce: np.ndarray
    """In the target frame, off the straight line through its last two sightings in the
    BOUNCE_LOOKBACK context frames before it: the paddle's return, a wall's or a brick's rebound
    (`train.object_bounce_fraction`)."""


def _bounces(shown: np.ndarray, rows: np.ndarray, cols: np.ndarray, candidates: np.ndarray,
             window: int, off: float) -> np.ndarray:
    """The windows s of `candidates` (target shown, steps clear) whose target sighting at frame
    s+window lies more than `off` pixels from where the last two context sightings point.
    shown, rows, cols: (N+1,) per frame of one episode."""
    look = min(window, BOUNCE_LOOKBACK)
    keep = []
    for s in candidates:
        g = int(s) + window
        seen = [k for k in range(g - look, g) if shown[k]]
        if len(seen) < 2:
            continue
        a, b = seen[-2], seen[-1]
        ahead = (g - b) / (b - a)  # the line's steps from b to the target, in units of a -> b
        row = rows[b] + (rows[b] - rows[a]) * ahead
        col = cols[b] + (cols[b] - cols[a]) * ahead
        if max(abs(row - rows[g]), abs(col - cols[g])) > off:
            keep.append(int(s))
    return np.asarray(keep, np.int64)


def find_object_windows(spans: Iterable[tuple[EpisodeArrays, int, int]], region: ObjectRegion,
                        window: int) -> ObjectWindows:
    """One pixel test per frame for every kind of `ObjectWindows`.

    Args:
        spans: per episode, it, the flat index of its first window and its number of windows.
        region: the pixel test.
        window: T, steps per window.
    """
    T = window
    found: tuple[list[np.ndarray], ...] = ([], [], [], [])
    for ep, offset, n in spans:
        frames = np.asarray(ep.frames)  # (N+1, 3, R, R)
        shown, rows, cols = region.sight(frames)  # (N+1,) each, per frame
        clear = (~ep.events.any(1) if ep.events.size else np.ones(ep.num_steps, bool)).astype(np.int64)  # (N,)
        # Window s covers frames s .. s+T and steps s .. s+T-1: running sums count the good ones.
        shows = np.convolve(shown.astype(np.int64), np.ones(T + 1, np.int64), "valid")[:n]  # (n,) frames with it
        steps_ok = np.convolve(clear, np.ones(T, np.int64), "valid")[:n] == T
        target = shown[T: T + n]
        for out, frames_ok in zip(found, (shows == T + 1, shown[T - 1: T - 1 + n], target & (shows == 1))):
            out.append(offset + np.flatnonzero(frames_ok & steps_ok))
        found[3].append(offset + _bounces(shown, rows, cols, np.flatnonzero(target & steps_ok), T,
                                          BOUNCE_OFF * frames.shape[-1]))
    every, last, appear, bounce = (np.concatenate(f) if f else np.zeros(0, np.int64) for f in found)
    return ObjectWindows(every, last, appear, bounce)

"""Animated look overlays for world events: rain, snow, night, fog, sunset, earthquake.

Every overlay is a pure function `look(frame, t, seed) -> frame`:
  frame (H, W, 3) uint8 RGB, t = agent steps since the event's onset (0 on the onset step),
  seed = the event instance's seed. The random layout (drop positions, noise tiles, shake table)
  is drawn once from `seed` and cached per (seed, H, W); the motion is a closed-form function of t.
  So a frame is the same whenever it is regenerated, nothing hidden mutates between calls, and
  the cost per frame is a few vectorised passes in integer arithmetic (no float frames).
Sizes scale with the frame so that 210x160 Atari frames and 96x96 CarRacing frames look alike.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

Look = Callable[[np.ndarray, int, int], np.ndarray]

_U16 = np.uint16


def _mul_add(frame: np.ndarray, mul: np.ndarray | np.uint16, add: np.ndarray | int = 0) -> np.ndarray:
    """(frame * mul) >> 8 + add in uint16 arithmetic, clipped to uint8. mul in [0, 256]."""
    out = frame * mul if isinstance(mul, np.ndarray) else frame.astype(_U16) * mul
    out >>= 8
    if not isinstance(add, int) or add:
        out += add
        np.minimum(out, 255, out=out)
    return out.astype(np.uint8)


def _full(h: int, w: int, value: np.ndarray) -> np.ndarray:
    """Broadcast to a contiguous (H, W, 3) uint16 array. numpy runs a (H, W, 3) x (H, W, 3) product
    about 15x faster than one broadcast from (3,) or (H, 1, 3), whose inner loop is only 3 long."""
    return np.ascontiguousarray(np.broadcast_to(np.round(value).astype(_U16), (h, w, 3)))


def _ramp(t: int, steps: int) -> float:
    """0 -> 1 over the first `steps` steps after onset: events fade in instead of popping."""
    return min(1.0, (t + 1) / steps)


# --- rain -----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _rain_layout(seed: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = max(24, h * w // 220)
    length = max(3, h // 18)
    y0 = rng.uniform(0, h + length, n)
    x0 = rng.uniform(0, w, n)
    speed = rng.uniform(0.07, 0.11, n) * h  # pixels per step: fast, with parallax spread
    order = rng.permutation(n)  # which drops appear first while the rain fades in
    k = np.arange(length)[None, :]  # (1, L) pixel index along the streak
    return y0, x0, speed, order, k


@lru_cache(maxsize=64)
def _rain_dim(h: int, w: int, level: int) -> np.ndarray:
    """(H, W, 3) uint16 multiplier: rain dims the scene and cools it, `level` / 8 of the way."""
    d = level / 8
    mul = np.array([200, 205, 230]) * d + 256 * (1 - d)
    return _full(h, w, mul)


def rain(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """Diagonal streaks falling fast (wrapping at the bottom) over a slightly dimmed, bluer scene."""
    h, w = frame.shape[:2]
    y0, x0, speed, order, k = _rain_layout(seed, h, w)
    a = _ramp(t, 8)
    gust = 0.5 + 0.5 * np.sin(0.21 * t + (seed % 7))  # the wind angle sways over time
    out = _mul_add(frame, _rain_dim(h, w, int(round(8 * a))))
    n_vis = max(1, int(len(order) * a))
    idx = order[:n_vis]
    length = k.shape[1]
    y = (y0[idx] + speed[idx] * t) % (h + length)  # (N,) head of each streak
    slope = 0.25 + 0.2 * gust
    x = (x0[idx] + slope * speed[idx] * t) % w
    ys = (y[:, None] - k).astype(np.intp)  # (N, L)
    xs = (x[:, None] - slope * k).astype(np.intp) % w
    keep = (ys >= 0) & (ys < h)
    ys, xs = ys[keep], xs[keep]
    px = out[ys, xs].astype(_U16)
    out[ys, xs] = ((px * 96 + np.array([210, 215, 235], _U16) * 160) >> 8).astype(np.uint8)
    return out


# --- snow -----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _snow_layout(seed: int, h: int, w: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    n = max(30, h * w // 160)
    y0 = rng.uniform(0, h, n)
    x0 = rng.uniform(0, w, n)
    fall = rng.uniform(0.008, 0.02, n) * h  # slow fall, pixels per step
    sway_amp = rng.uniform(0.5, 2.5, n) * (w / 96)
    sway_freq = rng.uniform(0.1, 0.3, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    big = rng.random(n) < 0.35  # some flakes are 2x2
    order = rng.permutation(n)
    return y0, x0, fall, sway_amp, sway_freq, phase, big, order


def snow(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """White flakes drifting down and swaying sideways; the colours wash out toward white."""
    h, w = frame.shape[:2]
    y0, x0, fall, amp, freq, phase, big, order = _snow_layout(seed, h, w)
    a = _ramp(t, 10)
    out = _mul_add(frame, _U16(256 - int(50 * a)), int(45 * a))
    idx = order[: max(1, int(len(order) * a))]
    y = ((y0[idx] + fall[idx] * t) % h).astype(np.intp)
    x = ((x0[idx] + 0.15 * t + amp[idx] * np.sin(freq[idx] * t + phase[idx])) % w).astype(np.intp)
    out[y, x] = 250
    b = big[idx]
    yb, xb = y[b], x[b]
    out[np.minimum(yb + 1, h - 1), xb] = 235
    out[yb, np.minimum(xb + 1, w - 1)] = 235
    out[np.minimum(yb + 1, h - 1), np.minimum(xb + 1, w - 1)] = 220
    return out


# --- night ----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _night_grade(h: int, w: int, level: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint16 multiplier and navy lift at darkness `level` / 16: blue-tinted and darker
    at the edges; the lift turns black backgrounds (most Atari games) a dark night blue.
    The lift never overflows: it is far below what the multiplier removes from a 255 pixel."""
    yy, xx = np.mgrid[0:h, 0:w]
    r2 = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2
    vignette = 1.0 - 0.35 * np.clip(r2 / 2, 0, 1)  # (H, W)
    tint = np.array([0.32, 0.38, 0.62])  # red/green fall most, a slight blue remains
    d = level / 16
    mul = (1 - d) + d * tint[None, None, :] * vignette[..., None]
    lift = d * vignette[..., None] * np.array([2.0, 6.0, 22.0])
    return _full(h, w, mul * 256), _full(h, w, lift)


def night(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """The scene darkens over ~16 steps to a blue-tinted, vignetted night with a slow moonlight pulse."""
    h, w = frame.shape[:2]
    level = int(round(16 * _ramp(t, 16)))
    if level == 16:  # settled: moonlight brightness breathes by a few percent
        level = 15 + int(0.5 + 0.5 * np.sin(0.08 * t + seed % 11))
    mul, lift = _night_grade(h, w, level)
    out = frame * mul  # uint8 * uint16 -> uint16
    out >>= 8
    out += lift
    return out.astype(np.uint8)


# --- fog ------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _fog_tiles(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Haze alpha (H, 2W, 3) uint16 in [100, 228] of 256 from smooth low-frequency noise that tiles
    horizontally, and the settled fog's (256 - alpha) and (190 * alpha) >> 8 terms."""
    rng = np.random.default_rng(seed)
    cell = max(4, min(h, w) // 8)
    gh, gw = h // cell + 2, (2 * w) // cell + 1
    c = rng.random((gh, gw))
    c[:, -1] = c[:, 0]  # wrap so the scrolling tile has no seam
    ys = np.linspace(0, gh - 1.001, h)
    xs = np.linspace(0, gw - 1.001, 2 * w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (c[y0][:, x0] * (1 - fy) * (1 - fx) + c[y0 + 1][:, x0] * fy * (1 - fx)
              + c[y0][:, x0 + 1] * (1 - fy) * fx + c[y0 + 1][:, x0 + 1] * fy * fx)  # (H, 2W) in [0, 1]
    alpha = np.repeat((100 + 128 * smooth)[..., None], 3, axis=2)
    return (256 - alpha).round().astype(_U16), (190 * alpha / 256).round().astype(_U16)


def fog(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """A grey haze whose density varies in drifting patches (noise scrolled sideways with t)."""
    h, w = frame.shape[:2]
    keep, grey = _fog_tiles(seed, h, w)
    s = int(t * max(1, w // 96)) % w
    a = _ramp(t, 12)
    if a < 1:  # fading in: blend toward the settled terms
        keep_t = (256 - (256 - keep[:, s:s + w]) * a).astype(_U16)
        grey_t = (grey[:, s:s + w] * a).astype(_U16)
    else:
        keep_t, grey_t = keep[:, s:s + w], grey[:, s:s + w]
    out = frame * keep_t  # uint8 * uint16 -> uint16
    out >>= 8
    out += grey_t
    return out.astype(np.uint8)


# --- sunset ---------------------------------------------------------------------------------


_SKY_DARK = 80
"""Pixels whose brightest channel is below this take the sunset sky colour, fully when black."""


@lru_cache(maxsize=96)
def _sunset_grade(h: int, w: int, level: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint16 multiplier, additive glow and dark-pixel sky colour at depth `level` / 32."""
    depth = level / 32
    v = np.linspace(0.0, 1.0, h)[:, None, None]  # (H, 1, 1) 0 at the top
    top = np.array([1.25, 0.8, 0.45])  # warm orange sky
    bottom = np.array([0.85, 0.55, 0.75])  # purple shadows below
    grade = top * (1 - v) + bottom * v  # (H, 1, 3)
    mul = ((1 - depth) + depth * grade) * 256
    glow = (depth * 40 * (1 - v) ** 2) * np.array([1.0, 0.45, 0.1])  # orange light near the top
    sky = depth * (np.array([80.0, 34.0, 10.0]) * (1 - v) + np.array([44.0, 12.0, 50.0]) * v)
    return _full(h, w, mul), _full(h, w, glow), _full(h, w, sky * 256 / _SKY_DARK)  # sky pre-scaled for >> 8


def sunset(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """A warm orange-at-the-top to purple-at-the-bottom grade that deepens as the sun goes down.

    Dark pixels (the black background of most Atari games, where a grade alone changes nothing)
    take an orange-to-purple sky colour, so the sunset shows from its first steps and never looks
    like night's dark blue."""
    h, w = frame.shape[:2]
    depth = min(1.0, 0.5 + 0.5 * (t / 60)) * _ramp(t, 4)  # deepens over ~60 steps
    mul, glow, sky = _sunset_grade(h, w, int(round(32 * depth)))
    brightest = np.maximum(np.maximum(frame[..., 0], frame[..., 1]), frame[..., 2])  # (H, W); 30x faster than max(axis=2)
    dark = _SKY_DARK - np.minimum(brightest, _SKY_DARK)  # (H, W) uint8 in [0, 80]
    lift = sky * np.repeat(dark[..., None], 3, axis=2)  # <= 256 * 80 fits uint16; (H, W, 3) x (H, W, 3) is fast
    lift >>= 8
    lift += glow
    return _mul_add(frame, mul, lift)


# --- earthquake -----------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _shake_table(seed: int) -> np.ndarray:
    """(256, 2) unit jitter directions; the offset at step t is table[t % 256] * amplitude(t)."""
    return np.random.default_rng(seed).uniform(-1, 1, (256, 2))


def earthquake(frame: np.ndarray, t: int, seed: int) -> np.ndarray:
    """The picture jumps by a random offset every step, the strength pulsing in waves; edges fill black."""
    h, w = frame.shape[:2]
    amp = max(2.0, min(h, w) / 24) * (0.55 + 0.45 * np.sin(0.35 * t)) * _ramp(t, 3)
    dy, dx = np.round(_shake_table(seed)[t % 256] * amp).astype(int)
    out = np.zeros_like(frame)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = frame[ys, xs]
    if dy == 0 and dx == 0:  # a still moment: nudge one pixel so the shake never looks frozen
        out[:, 1:] = frame[:, :-1]
    return out


LOOKS: dict[str, Look] = {
    # Order is the compositing order: light first, then atmosphere, precipitation, camera.
    "sunset": sunset,
    "night": night,
    "fog": fog,
    "rain": rain,
    "snow": snow,
    "earthquake": earthquake,
}
"""Look event name -> overlay; iterate in this order so a combination looks the same whatever
order the events started in."""


def apply_looks(frame: np.ndarray, active: dict[str, tuple[int, int]]) -> np.ndarray:
    """Composite the active looks onto `frame`.

    Args:
        frame: (H, W, 3) uint8.
        active: look name -> (t since onset, seed); names without an overlay are skipped.
    """
    for name, look in LOOKS.items():
        if name in active:
            t, seed = active[name]
            frame = look(frame, t, seed)
    return frame

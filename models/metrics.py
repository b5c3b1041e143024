"""Frame-quality metrics, batched open-loop rollouts and dependency-free PNG output.

Frames are tensors in [-1, 1], (..., 3, H, W); metrics map them to [0, 1] first.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame: (N, 3, H, W) x2 -> (N,). Capped at 100 dB."""
    mse = ((a.float() - b.float()) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp(min=1e-10))).clamp(max=100.0)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per frame (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
    K1 0.01, K2 0.03), averaged over channels and valid positions: (N, 3, H, W) x2 -> (N,)."""
    x, y = (a.float() + 1) / 2, (b.float() + 1) / 2
    c = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    w = _gaussian_window(size).to(x.device)[None, None].repeat(c, 1, 1, 1)  # (C, 1, k, k)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def rollout(model: Any, frames: torch.Tensor, actions: torch.Tensor, events: torch.Tensor,
            horizon: int, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Open-loop rollouts of a WorldModel from real context with given actions.

    Args:
        model: a WorldModel.
        frames: (B, C, 3, H, W) real context frames in [-1, 1].
        actions: (B, C-1+horizon) long: the C-1 context actions, then one per generated step.
        events: (B, C-1+horizon, EVENT_DIM) event vectors aligned with `actions`.
        horizon: steps to generate.
    Returns generated frames (B, horizon, 3, H, W), rewards (B, horizon), termination
    probabilities (B, horizon).
    """
    c = frames.shape[1]
    state = model.start(frames, actions[:, : c - 1], events[:, c - 2] if c > 1 else None)
    out, rew, end = [], [], []
    for k in range(horizon):
        state, pred = model.advance(state, actions[:, c - 1 + k], events[:, c - 1 + k], generator)
        out.append(pred.frame.float())
        rew.append(pred.reward.float())
        end.append(pred.termination.float())
    return torch.stack(out, 1), torch.stack(rew, 1), torch.stack(end, 1)


def gather_windows(recs: Any, items: list[tuple[int, int, int]], context: int, horizon: int,
                   device: torch.device | str) -> dict[str, Any]:
    """Real stretches of episodes for open-loop rollouts, padded to `horizon` steps.

    Args:
        recs: `models.data.Recordings`.
        items: (episode, first context frame s, steps n <= horizon) per rollout.
    Returns frames (B, C+H, 3, R, R) in [-1, 1] and actions (B, C-1+H) on `device`; numpy
    active (B, C-1+H, E) event flags, rewards and ends (B, H) of the generated steps, valid (B, H).
    """
    b, r, e = len(items), recs.resolution, max(len(recs.event_names), 1)
    frames = np.zeros((b, context + horizon, 3, r, r), np.uint8)
    actions = np.zeros((b, context - 1 + horizon), np.int64)
    active = np.zeros((b, context - 1 + horizon, e), np.float32)
    rewards = np.zeros((b, horizon), np.float32)
    ends = np.zeros((b, horizon), np.float32)
    valid = np.zeros((b, horizon), bool)
    for k, (i, s, n) in enumerate(items):
        ep = recs.episodes[i]
        frames[k, : context + n] = ep.frames[s: s + context + n]
        actions[k, : context - 1 + n] = ep.actions[s: s + context - 1 + n]
        if recs.event_names:
            active[k, : context - 1 + n] = ep.events[s: s + context - 1 + n]
        rewards[k, :n] = ep.rewards[s + context - 1: s + context - 1 + n]
        ends[k, :n] = ep.terminations[s + context - 1: s + context - 1 + n]
        valid[k, :n] = True
    f = torch.from_numpy(frames).to(device).float().div_(127.5).sub_(1)
    return {"frames": f, "actions": torch.from_numpy(actions).to(device), "active": active,
            "rewards": rewards, "ends": ends, "valid": valid}


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8."""
    x = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def strip(rows: list[torch.Tensor], gap: int = 2) -> np.ndarray:
    """Image of frame rows: each row (N, 3, H, W) in [-1, 1]; returns (H', W', 3) uint8 with
    `gap`-pixel grey separators between frames and rows."""
    n = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[-2:]
    img = np.full((len(rows) * (h + gap) - gap, n * (w + gap) - gap, 3), 64, np.uint8)
    for i, row in enumerate(rows):
        pics = to_uint8(row)
        for j in range(pics.shape[0]):
            img[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = pics[j]
    return img


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG with zlib only (PNG spec, ISO 15948)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, RGB, no interlace
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) \
        + chunk(b"IEND", b"")
    Path(path).write_bytes(data)


def f1_score(pred: np.ndarray, true: np.ndarray) -> tuple[float | None, dict[str, int]]:
    """F1 of boolean predictions; None when there is neither a positive nor a predicted one."""
    tp = int((pred & true).sum())
    fp = int((pred & ~true).sum())
    fn = int((~pred & true).sum())
    counts = {"tp": tp, "fp": fp, "fn": fn, "positives": int(true.sum())}
    if tp + fp + fn == 0:
        return None, counts
    return 2 * tp / (2 * tp + fp + fn), counts


def plot_by_horizon(path: str | Path, horizons: list[int], series: dict[str, list[float | None]],
                    title: str = "", size: tuple[int, int] = (360, 240)) -> None:
    """Draw one small line chart per series (value by horizon, log-spaced x) into a PNG row.

    Drawn with pygame (no matplotlib); missing values (None) leave gaps.
    """
    import pygame

    pygame.font.init()
    font = pygame.font.Font(None, 18)
    w, h = size
    surface = pygame.Surface((w * len(series), h))
    surface.fill((255, 255, 255))
    left, right, top, bottom = 48, 12, 26, 30
    xs = [math.log(x) for x in horizons]
    x0, x1 = min(xs), max(xs) if len(xs) > 1 else min(xs) + 1
    for k, (name, values) in enumerate(series.items()):
        ox = k * w
        known = [v for v in values if v is not None and math.isfinite(v)]
        lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
        if hi - lo < 1e-6:
            lo, hi = lo - 0.5, hi + 0.5
        pad = 0.1 * (hi - lo)
        lo, hi = lo - pad, hi + pad

        def px(x: float, y: float, ox: int = ox, lo: float = lo, hi: float = hi) -> tuple[int, int]:
            fx = (x - x0) / (x1 - x0) if x1 > x0 else 0.5
            return (ox + left + int(fx * (w - left - right)), top + int((1 - (y - lo) / (hi - lo)) * (h - top - bottom)))

        pygame.draw.rect(surface, (200, 200, 200), (ox + left, top, w - left - right, h - top - bottom), 1)
        for tick in (lo + pad, (lo + hi) / 2, hi - pad):
            _, y = px(x0, tick)
            surface.blit(font.render(f"{tick:.3g}", True, (80, 80, 80)), (ox + 4, y - 6))
        for x, label in zip(xs, horizons):
            X, _ = px(x, lo)
            surface.blit(font.render(str(label), True, (80, 80, 80)), (X - 6, h - bottom + 6))
        points = [px(x, v) for x, v in zip(xs, values) if v is not None and math.isfinite(v)]
        if len(points) > 1:
            pygame.draw.lines(surface, (30, 90, 200), False, points, 2)
        for p in points:
            pygame.draw.circle(surface, (30, 90, 200), p, 4)
        surface.blit(font.render(f"{title}{name} by horizon (steps)", True, (0, 0, 0)), (ox + left, 6))
    image = pygame.surfarray.array3d(surface).transpose(1, 0, 2)
    write_png(path, image)

#!/usr/bin/env python
"""Does a Breakout world model draw the ball where it is?

The ball is 2x4 pixels of a 210x160 frame: at 64x64 it is one or two pixels at about 40% of its
colour. PSNR hardly notices it, so this counts it directly. From real, event-free context
windows in which the ball is in flight (between the wall and the paddle for every step
measured), the benchmark reports:

0. **A straight line**: the share of windows where the line through the ball's last two
   context positions ends within one pixel of its next spot: the reference for step 1 below.
1. **From real context, by noise level**: the denoiser's estimate D(target + sigma * noise;
   sigma) of the next frame. At low sigma the ball shows through the noise and can be copied;
   at the `fast` sampler's sigma_max (5) it must be predicted from the context frames alone.
   A model that has learned the ball's motion draws it at every level; one that has not draws
   it only at the low ones.
2. **Open-loop rollouts, by sampler preset**: the share of windows where the generated frame
   holds the ball at the real ball's pixel (within one pixel) at each step, with the recorded
   actions; and the share where it draws a ball anywhere in the band.
3. **Long rollouts** (`--long N`): N open-loop steps, most of them drawn from the model's own
   frames alone (the real context has scrolled out after 4), as in play, from windows whose
   last context frame shows the ball; at steps 1, 2, 4, 8, ... and N the share of windows whose
   band holds a ball (a compact spot of 1-6 pixels, not a sampler's spray of speckles) and the
   band's brightest red, beside the same for the real frames (the real ball leaves the band
   when it climbs into the wall or is missed).
   A ball that fades step by step shows here, not in the four open-loop steps.

"Drawn" means the red channel there reaches half the real ball's peak.

examples:
  python benchmarks/ball_tracking.py --checkpoint checkpoints/breakout-diffusion --data data/breakout_eval
  python benchmarks/ball_tracking.py --checkpoint RUN --data DIR --horizon 8 --json ball.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brick_memory import brick_rows, open_breakout  # noqa: E402  (this directory: sys.path[0])

from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from engine.files import write_atomic  # noqa: E402
from models.metrics import rollout  # noqa: E402
from models.world import EVENT_DIM  # noqa: E402

SIGMAS = (0.1, 0.3, 0.7, 1.5, 5.0)
PRESENT = 60  # red level (0-255) above which a band pixel holds the ball at 64x64 (its peak: ~90)
PADDLE_TOP = 189 / 210  # the paddle's first row as a share of the Atari frame's height
BALL_PIXELS = 6  # a ball at 64x64 covers 1-2 pixels, 4 when it straddles a pixel edge in both axes
WALL = 4  # side-wall columns left out at 64x64 (8 of 160 in the Atari frame)


def ball_band(frame: np.ndarray) -> tuple[int, int]:
    """The rows between the brick wall and the paddle, from a (3, R, R) uint8 frame."""
    r = frame.shape[-1]
    bricks = brick_rows(frame)
    if not bricks:
        raise UserError("the first frame shows no brick wall: is this Breakout at the start of a game?")
    return bricks[-1] + 2, int(r * PADDLE_TOP) - 1


def locate(frames: torch.Tensor, band: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Brightest red pixel of the band in (..., 3, R, R) frames (0-255): its value, row and column."""
    red = frames[..., 0, band[0]: band[1], WALL:-WALL]
    width = red.shape[-1]
    value, index = red.reshape(*red.shape[:-2], -1).max(-1)
    return value, index // width + band[0], index % width + WALL


def at_spot(frames: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Brightest red within one pixel of (rows, cols) in (N, 3, R, R) frames (0-255); (N,)."""
    padded = torch.nn.functional.pad(frames[:, 0], (1, 1, 1, 1))  # (N, R+2, R+2)
    near = torch.stack([padded[torch.arange(len(rows)), rows + dy, cols + dx]
                        for dy in range(3) for dx in range(3)], 1)
    return near.amax(1)


def ball_like(frames: torch.Tensor, band: tuple[int, int], threshold: float) -> torch.Tensor:
    """(...,) bool: the band of (..., 3, R, R) frames (0-255) holds a ball, a compact bright spot:
    its red passes `threshold` somewhere, at no more than BALL_PIXELS pixels (a sampler's red
    speckles pass it all over the band)."""
    bright = (frames[..., 0, band[0]: band[1], WALL:-WALL] > threshold).sum((-2, -1))
    return (bright > 0) & (bright <= BALL_PIXELS)


def stack_windows(eps: Any, picks: list[tuple[int, int]], c: int, h: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames (B, c+h, 3, R, R) float 0-255 and actions (B, c-1+h) of the windows (episode, start)."""
    frames = torch.stack([torch.from_numpy(np.array(eps[e].frames[s: s + c + h])) for e, s in picks]).float()
    actions = torch.stack([torch.from_numpy(np.asarray(eps[e].actions[s: s + c - 1 + h])) for e, s in picks]).long()
    return frames, actions


def long_rollout(model: Any, recs: Any, band: tuple[int, int], n: int, windows: int) -> dict[str, Any]:
    """Ball presence over `n`-step rollouts per sampler preset, beside the real frames'."""
    C = int(model.context_frames)
    picks: list[tuple[int, int]] = []
    for e, ep in enumerate(recs.episodes):
        for s in range(0, ep.num_steps - C - n, 7):
            if np.asarray(ep.events[s: s + C + n]).any():
                continue
            seen, _, _ = locate(torch.from_numpy(np.array(ep.frames[s + C - 1])).float(), band)
            if float(seen) > PRESENT:
                picks.append((e, s))
    if not picks:
        raise UserError(f"no event-free stretch of {C + n} steps starts with the ball in flight")
    picks = picks[:: max(1, len(picks) // windows)][:windows]
    raw, actions = stack_windows(recs.episodes, picks, C, n)
    real_peak, _, _ = locate(raw[:, C:], band)  # (B, n)
    shown = real_peak[real_peak > PRESENT]
    half = (float(shown.mean()) if len(shown) else 2 * PRESENT) / 2  # half the real ball's mean peak
    real_ball = ball_like(raw[:, C:], band, half)  # (B, n)
    steps = sorted({2 ** k for k in range(n.bit_length()) if 2 ** k <= n} | {n})
    out: dict[str, Any] = {"windows": len(picks), "steps": steps, "threshold": round(half, 1),
                           "real": [round(float(real_ball[:, t - 1].float().mean()), 3) for t in steps],
                           "real_red": [round(float(real_peak[:, t - 1].mean()), 1) for t in steps]}
    print(f"{n}-step rollouts, {len(picks)} windows, steps {steps}: share with a ball in the band (1-{BALL_PIXELS} pixels "
          f"of red > {half:.0f}), "
          f"mean brightest red there")
    print(f"  {'real':<9} " + " ".join(f"{v:.2f}" for v in out["real"]) + "   red " + " ".join(f"{v:.0f}" for v in out["real_red"]))
    events = torch.zeros(len(picks), C - 1 + n, EVENT_DIM)
    for name in model.sampler_presets:
        model.set_sampler(name)
        with torch.no_grad():
            frames, _, _ = rollout(model, raw[:, :C] / 127.5 - 1, actions, events, n, torch.Generator().manual_seed(0))
        frames = (frames + 1) * 127.5  # (B, n, 3, R, R)
        peak, _, _ = locate(frames, band)  # (B, n)
        drawn = ball_like(frames, band, half)
        share = [round(float(drawn[:, t - 1].float().mean()), 3) for t in steps]
        red = [round(float(peak[:, t - 1].mean()), 1) for t in steps]
        out[name] = {"ball": share, "red": red}
        print(f"  {name:<9} " + " ".join(f"{v:.2f}" for v in share) + "   red " + " ".join(f"{v:.0f}" for v in red))
    return out


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a Breakout diffusion model run directory")
    p.add_argument("--data", required=True, metavar="DIR", help="held-out Breakout recordings")
    p.add_argument("--windows", type=int, default=48, help="context windows (default 48)")
    p.add_argument("--horizon", type=int, default=4,
                   help="open-loop steps (default 4: with the 4 context frames, most flights are 10-14 steps)")
    p.add_argument("--long", type=int, default=0, metavar="N",
                   help="also roll N steps with each preset and follow the ball (default 0: skip; try 32)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if args.windows < 1 or args.horizon < 1 or args.long < 0:
        raise UserError("--windows and --horizon must be >= 1, --long >= 0")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: no such directory")
    run, recs = open_breakout(args.checkpoint, args.data, "Breakout's ball")
    model, C, H = run.model, int(run.model.context_frames), args.horizon
    if not hasattr(model, "denoiser"):
        raise UserError(f"{args.checkpoint} is not a diffusion model; this probes a denoiser")
    band = ball_band(recs.episodes[0].frames[0])
    picks: list[tuple[int, int]] = []
    for e, ep in enumerate(recs.episodes):
        for s in range(0, ep.num_steps - C - H, 2):
            if np.asarray(ep.events[s: s + C + H]).any():
                continue
            seen, _, _ = locate(torch.from_numpy(np.array(ep.frames[s: s + C + H])).float(), band)
            if bool((seen > PRESENT).all()):
                picks.append((e, s))
    if not picks:
        raise UserError(f"no event-free window of {args.data} keeps the ball in flight for {C + H} steps")
    picks = picks[:: max(1, len(picks) // args.windows)][: args.windows]
    raw, actions = stack_windows(recs.episodes, picks, C, H)
    context, B = raw[:, :C] / 127.5 - 1, len(picks)  # (B, C, 3, R, R) in [-1, 1]
    peak, rows, cols = locate(raw[:, C:], band)  # (B, H) each: the real ball at every step
    result: dict[str, object] = {"checkpoint": args.checkpoint, "windows": B, "band_rows": list(band),
                                 "real_peak": float(peak.mean())}
    print(f"{B} windows with the ball in flight (rows {band[0]}-{band[1] - 1}); real ball peak red {peak.mean():.0f}")

    # 0. What the context alone allows: a straight line through the ball's last two positions,
    # counted as at_spot counts a model's ball (within one pixel each way). The brightest pixel
    # jitters by one as the ball crosses pixel edges, so a stricter count (one pixel in all,
    # L1) would miss about a third of clear windows.
    _, last_rows, last_cols = locate(raw[:, C - 2: C], band)  # (B, 2) each
    guess_rows, guess_cols = 2 * last_rows[:, 1] - last_rows[:, 0], 2 * last_cols[:, 1] - last_cols[:, 0]
    straight = float((((guess_rows - rows[:, 0]).abs() <= 1) & ((guess_cols - cols[:, 0]).abs() <= 1)).float().mean())
    result["straight_line"] = straight
    print(f"a straight line through the ball's last two context positions ends within one pixel of its "
          f"next spot in {straight:.2f} of the windows (a model that carries the ball on should come near it)")

    # 1. One step from real context, by noise level: copied through the noise, or predicted?
    gen = torch.Generator().manual_seed(0)
    target = raw[:, C] / 127.5 - 1
    noise = torch.randn(target.shape, generator=gen)
    quiet = torch.zeros(B, EVENT_DIM)
    with torch.no_grad():
        prep = model.unet.prepare(context, actions[:, :C], torch.zeros(B, dtype=torch.long),  # type: ignore[union-attr, operator]
                                  model.event_input(quiet, quiet))  # type: ignore[operator]
        by_sigma, level = {}, {}
        for sigma in SIGMAS:
            out = model.denoiser(target + sigma * noise, torch.full((B,), sigma), prep)  # type: ignore[operator]
            red = at_spot((out + 1) * 127.5, rows[:, 0], cols[:, 0])  # (B,)
            by_sigma[str(sigma)] = float((red > peak[:, 0] / 2).float().mean())
            level[str(sigma)] = float((red / peak[:, 0]).mean())  # a faint ball shows here first
    result["one_step_by_sigma"] = by_sigma
    result["one_step_level_by_sigma"] = level
    print("one step from real context, ball drawn at its spot (its red level / the real one's), by sigma: "
          + "  ".join(f"{s}: {v:.2f} ({level[s]:.2f})" for s, v in by_sigma.items()))

    # 2. Open-loop rollouts with the recorded actions, per sampler preset.
    events = torch.zeros(B, C - 1 + H, EVENT_DIM)
    for name in model.sampler_presets:  # type: ignore[union-attr]
        model.set_sampler(name)  # type: ignore[operator]
        with torch.no_grad():
            frames, _, _ = rollout(model, context, actions, events, H, torch.Generator().manual_seed(0))
        frames = (frames + 1) * 127.5  # (B, H, 3, R, R)
        spot = torch.stack([at_spot(frames[:, t], rows[:, t], cols[:, t]) for t in range(H)], 1)
        anywhere, _, _ = locate(frames, band)
        hit = (spot > peak / 2).float().mean(0)
        drawn = (anywhere > peak / 2).float().mean(0)
        result[name] = {"at_ball": [round(float(v), 3) for v in hit],
                        "anywhere": [round(float(v), 3) for v in drawn]}
        print(f"  {name:<9} ball at the real spot, steps 1-{H}: " + " ".join(f"{v:.2f}" for v in hit)
              + "   a ball anywhere: " + " ".join(f"{v:.2f}" for v in drawn))
    if args.long:
        result["long_rollout"] = long_rollout(model, recs, band, args.long, args.windows)
    if args.json:
        write_atomic(Path(args.json), (json.dumps(result, indent=1) + "\n").encode(), durable=False)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

#!/usr/bin/env python
"""The most a world model can score on each look event under `train.py eval --events`.

Rain drops, snow flakes, fog tiles and the earthquake's jolts are laid out from a seed the
model never sees (engine/looks.py). So a model that draws a look perfectly still draws its own
layout. This script puts each look on real event-free frames twice, with two seeds, and
measures at model resolution:

- **another draw**: PSNR(look with seed A, look with seed B). A perfect sampler scores this.
- **mean of draws**: PSNR(look with seed A, the mean over `--draws` other seeds). The best a
  model that predicts the expected frame could score; a sampler does not do this.
- **no look**: PSNR(look with seed A, the plain frame). What the model scores without the
  event's vector, if it draws the scene right.

"another draw" minus "no look" is the ceiling of a sampler's dPSNR, the eval's event-fidelity
figure. Where it is near zero, the eval cannot tell a drawn look from an absent one. PSNR is
pooled: 10 log10(255^2 / mean squared error over all frames). Two draws sometimes land on the
same shake offset, so a per-frame mean would count a few exact matches at the PSNR cap.

examples:
  python benchmarks/look_ceiling.py --data data/breakout_eval
  python benchmarks/look_ceiling.py --data data/carracing_eval --json ceiling.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.dataset import open_dataset  # noqa: E402
from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from engine.looks import LOOKS  # noqa: E402
from models.data import resize_frames  # noqa: E402


def pooled_psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of all frames together, at most 100; (N, 3, R, R) uint8 or float in [0, 255]."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return min(100.0, 10 * np.log10(255.0**2 / max(mse, 1e-10)))  # capped as models.metrics.psnr


def event_free_frames(data: str, count: int, seed: int) -> np.ndarray:
    """`count` recorded frames (N, H, W, 3) from steps with no event on, spread over the episodes."""
    ds = open_dataset(data)
    rng = np.random.default_rng(seed)
    per_episode = max(1, -(-count // len(ds.episodes)))
    picked = []
    for i in range(len(ds.episodes)):
        obs, _ = ds.load_frames(i)  # (n+1, H, W, 3): obs[j + 1] is the frame after step j
        events = ds.read(i, ("events",))["events"][: len(obs) - 1]
        free = np.flatnonzero([not str(e) for e in events])  # steps with no event on
        if len(free):
            picked.append(obs[rng.choice(free, min(per_episode, len(free)), replace=False) + 1])
        if sum(len(p) for p in picked) >= count:
            break
    if not picked:
        raise UserError(f"{data} has no event-free steps to put looks on")
    return np.concatenate(picked)[:count]


def ceiling(frames: np.ndarray, name: str, steps: list[int], draws: int, resolution: int) -> dict[str, float]:
    look = LOOKS[name]
    n = len(frames)

    def drawn(t: int, seed: int) -> np.ndarray:  # (N, 3, R, R) uint8; one seed per frame
        return resize_frames(np.stack([look(f, t, seed + k) for k, f in enumerate(frames)]), resolution)

    plain = resize_frames(frames, resolution)
    rows: dict[str, list[float]] = {"another_draw": [], "mean_of_draws": [], "no_look": []}
    for t in steps:
        real = drawn(t, 1_000)
        mean = np.mean([drawn(t, 100_000 + d * n).astype(np.float64) for d in range(draws)], axis=0)
        rows["another_draw"].append(pooled_psnr(real, drawn(t, 50_000)))
        rows["mean_of_draws"].append(pooled_psnr(real, mean))
        rows["no_look"].append(pooled_psnr(real, plain))
    out = {k: round(float(np.mean(v)), 2) for k, v in rows.items()}
    out["sampler_ceiling_dpsnr"] = round(out["another_draw"] - out["no_look"], 2)
    out["mean_ceiling_dpsnr"] = round(out["mean_of_draws"] - out["no_look"], 2)
    return out


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a recording directory (its event-free frames are used)")
    p.add_argument("--frames", type=int, default=96)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 16], metavar="T",
                   help="steps since the event's onset (the eval's horizon is 16)")
    p.add_argument("--draws", type=int, default=16, help="seeds averaged for 'mean of draws'")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    frames = event_free_frames(args.data, args.frames, args.seed)
    print(f"{len(frames)} event-free frames of {args.data} at {args.resolution}x{args.resolution}, "
          f"steps {args.steps} after onset; PSNR in dB")
    print(f"{'look':11s} {'another draw':>12s} {'mean of draws':>13s} {'no look':>8s} "
          f"{'ceiling dPSNR: sampler':>23s} {'mean':>6s}")
    result = {}
    for name in LOOKS:
        r = result[name] = ceiling(frames, name, args.steps, args.draws, args.resolution)
        print(f"{name:11s} {r['another_draw']:12.1f} {r['mean_of_draws']:13.1f} {r['no_look']:8.1f} "
              f"{r['sampler_ceiling_dpsnr']:+23.1f} {r['mean_ceiling_dpsnr']:+6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "frames": len(frames), "steps": args.steps,
                                               "looks": result}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

#!/usr/bin/env python
"""How far a dynamics event moves the real game, step by step, and whether a model follows.

Exact counterfactuals of the real game: the scripted player plays an episode and its actions are
kept. The episode is then replayed from the same seed with the same actions, with the event
switched on at step t0 (assets/events.yaml): CarRacing's physics events (ice, turbo) or
Breakout's RAM events (extra_life, rebuild_wall). Box2D and the Atari emulator replay exactly
(checked once per episode), so the two copies differ by the event alone. Per horizon h after
the onset:

- **real**: PSNR(real with, real without). How much the event changes the frames; lower is a
  stronger change. Compare it with a model's own error (`train.py eval` PSNR@h): a change far
  below that error is a weak training signal for the event's vector.

With --checkpoint, the world model continues from the C real frames before the onset with the
same actions and the same sampler noise, once with the event's vector and once without:

- **model**: PSNR(model with, model without). Does the model respond to the event at all?
- **dPSNR**: PSNR(model with, real with) - PSNR(model without, real with). Does it respond the
  right way? This is `train.py eval --events`' dynamics fidelity, on exact counterfactuals.
- **exact**: the dPSNR of the model's own rollout without the event, with the pixels the event
  changes (where real with and real without differ) set to the real ones: what drawing the
  change exactly, and nothing else, earns on top of the model's other errors. An event that
  changes a few pixels (Breakout's life counter) earns little this way. A model can score above
  it, or below zero, by what the event's vector does to the rest of its frames (a tint).

examples:
  python benchmarks/dynamics_signal.py --episodes 8
  python benchmarks/dynamics_signal.py --checkpoint checkpoints/carracing-diffusion --json out.json \
      --png ice.png --events ice
  python benchmarks/dynamics_signal.py --checkpoint checkpoints/breakout-diffusion --events extra_life rebuild_wall
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

from engine.autopilot import make_policy  # noqa: E402
from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from engine.events import EventLayer, load_catalog  # noqa: E402
from engine.files import write_atomic  # noqa: E402
from engine.games import make_simulator  # noqa: E402
from engine.session import psnr  # noqa: E402  (uint8 frames, 99 dB when equal)
from engine.simulator import WorldEvent  # noqa: E402
from models.data import resize_frames  # noqa: E402
from models.metrics import strip, write_png  # noqa: E402

SHOWN = (1, 2, 4, 8, 16)
PICTURED = (2, 4, 8, 12, 16)
ONSETS = {"carracing": [60, 100, 140], "breakout": [100, 200, 300]}
"""Default onset steps per game: Breakout's later, so that the player has broken bricks to rebuild."""


def player_episode(game: str, seed: int, steps: int) -> tuple[list[int], list[np.ndarray]]:
    """The scripted player's actions and every frame (frame t+1 follows action t), no events.
    Shorter than `steps` when the game ends first."""
    sim = make_simulator(game, audio=False, seed=seed)
    policy = make_policy("scripted", sim.spec, seed)
    policy.reset()
    frames, actions = [sim.reset(seed)], []
    for _ in range(steps):
        a = policy.act(frames[-1], sim)
        step = sim.step(a)
        actions.append(a)
        frames.append(step.frame)
        if step.terminated or step.truncated:
            break
    sim.close()
    return actions, frames


def replay_with(game: str, seed: int, actions: list[int], t0: int, horizon: int,
                events: tuple[WorldEvent, ...]) -> np.ndarray:
    """Frames t0+1 .. t0+horizon of the replay with `events` on from step t0: (H, H0, W0, 3).
    The event layer applies them as play does (physics scales, or a RAM edit at the onset)."""
    sim = EventLayer(make_simulator(game, audio=False, seed=seed), seed=seed)
    sim.reset(seed)
    for a in actions[:t0]:
        sim.step(a)
    out = np.stack([sim.step(a, events).frame for a in actions[t0:t0 + horizon]])
    sim.close()
    return out


def model_rollout(sim: Any, frames: list[np.ndarray], actions: list[int], t0: int, horizon: int,
                  events: tuple[WorldEvent, ...], seed: int) -> np.ndarray:
    """The model's frames t0+1 .. t0+horizon from the C real frames up to t0: (H, R, R, 3)."""
    c = sim.context_frames
    sim.reset_from(np.stack(frames[t0 - c + 1:t0 + 1]), actions[t0 - c + 1:t0], seed=seed)
    return np.stack([sim.step(a, events).frame for a in actions[t0:t0 + horizon]])


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="RUN", help="also measure this world model of the events' game")
    p.add_argument("--events", nargs="+", default=["ice", "turbo"], metavar="NAME",
                   help="dynamics events of one game (default ice turbo; Breakout: extra_life rebuild_wall)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--onsets", type=int, nargs="+", metavar="T0",
                   help="steps at which the event starts, per episode (default CarRacing 60 100 140, "
                   "Breakout 100 200 300)")
    p.add_argument("--horizon", type=int, default=16)
    p.add_argument("--seed", type=int, default=500000, help="first episode's seed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--png", metavar="FILE", help="with --checkpoint: the first onsets of each event as "
                   "rows real with / real without / model with / model without, at horizons 2 4 8 12 16")
    p.add_argument("--png-onsets", type=int, default=2, metavar="N", help="onsets per event in --png (default 2)")
    args = p.parse_args()

    catalog = load_catalog()
    games = set()
    for name in args.events:
        spec = catalog.events.get(name)
        if spec is None or spec.kind != "dynamics":
            raise UserError(f"'{name}' is not a dynamics event (known: "
                            + ", ".join(n for n, e in catalog.events.items() if e.kind == "dynamics") + ")")
        games.add(spec.games[0] if spec.games and len(spec.games) == 1 else "")
    if len(games) != 1 or "" in games:
        raise UserError("--events must all be dynamics events of one game, e.g. ice turbo or extra_life rebuild_wall")
    game = games.pop()
    onsets = args.onsets or ONSETS[game]
    sim = None
    resolution = 64
    if args.checkpoint:
        from models.neural_sim import open_neural_simulator

        sim = open_neural_simulator(args.checkpoint, device=args.device)
        if sim.spec.name != game:
            sim.close()
            raise UserError(f"{args.checkpoint} is a {sim.spec.name} model, not {game}")
        resolution = int(sim.model.resolution)
    context = sim.context_frames if sim is not None else 1
    if min(onsets) < context or args.horizon < 1 or args.episodes < 1:
        raise UserError(f"need --episodes >= 1, --horizon >= 1 and onsets >= {context} (the model's "
                        "context frames come before the onset)")

    h = args.horizon
    pictures: dict[str, list[np.ndarray]] = {n: [] for n in args.events}  # rows of (k, 3, R, R) uint8
    keys = ("real", "model", "dpsnr", "exact")
    rows: dict[str, dict[str, list[list[float]]]] = {n: {k: [] for k in keys} for n in args.events}
    for ep in range(args.episodes):
        seed = args.seed + ep
        actions, frames = player_episode(game, seed, max(onsets) + h)
        t0 = min(onsets)  # the method rests on replays being exact: check it once per episode
        if t0 + h <= len(actions) and not np.array_equal(replay_with(game, seed, actions, t0, h, ()),
                                                         np.stack(frames[t0 + 1:t0 + 1 + h])):
            print(f"error: replaying episode seed {seed} did not reproduce it; no counterfactuals "
                  "can be made here", file=sys.stderr)
            return 1
        for t0 in [t for t in onsets if t + h <= len(actions)]:  # onsets the episode lasts past
            without = resize_frames(np.stack(frames[t0 + 1:t0 + 1 + h]), resolution)  # (H, 3, R, R)
            for name in args.events:
                event = (WorldEvent(name),)
                with_ = resize_frames(replay_with(game, seed, actions, t0, h, event), resolution)
                rows[name]["real"].append([psnr(with_[i], without[i]) for i in range(h)])
                if sim is None:
                    continue
                noise_seed = seed * 1000 + t0
                m_on = model_rollout(sim, frames, actions, t0, h, event, noise_seed)
                m_off = model_rollout(sim, frames, actions, t0, h, (), noise_seed)
                m_on, m_off = m_on.transpose(0, 3, 1, 2), m_off.transpose(0, 3, 1, 2)  # (H, 3, R, R)
                # The model's own frames, with the pixels the event changes drawn exactly.
                changed = (with_ != without).any(1, keepdims=True)  # (H, 1, R, R)
                drawn = np.where(changed, with_, m_off)
                if len(pictures[name]) < 4 * args.png_onsets:
                    cols = [x - 1 for x in PICTURED if x <= h]
                    pictures[name] += [v[cols] for v in (with_, without, m_on, m_off)]
                rows[name]["model"].append([psnr(m_on[i], m_off[i]) for i in range(h)])
                rows[name]["dpsnr"].append([psnr(m_on[i], with_[i]) - psnr(m_off[i], with_[i]) for i in range(h)])
                rows[name]["exact"].append([psnr(drawn[i], with_[i]) - psnr(m_off[i], with_[i]) for i in range(h)])
        print(f"episode {ep + 1}/{args.episodes} done", file=sys.stderr)

    if not rows[args.events[0]]["real"]:
        raise UserError(f"no episode lasted past an onset ({' '.join(map(str, onsets))}) plus "
                        f"{h} steps; give earlier --onsets")
    result: dict[str, Any] = {"game": game, "episodes": args.episodes, "onsets": onsets,
                              "checkpoint": args.checkpoint}
    shown = [x for x in SHOWN if x <= h]
    print(f"{len(rows[args.events[0]]['real'])} onsets per event; medians over onsets; horizon "
          + " / ".join(str(x) for x in shown))
    for name, r in rows.items():
        result[name] = {}
        for key, label in (("real", "real with vs without, dB"), ("model", "model with vs without, dB"),
                           ("dpsnr", "dPSNR vs real with, dB"), ("exact", "dPSNR, change drawn exactly")):
            if not r[key]:
                continue
            med = np.median(np.array(r[key]), axis=0)
            result[name][key] = [round(float(x), 2) for x in med]
            print(f"  {name:<12} {label:<27} " + " / ".join(f"{med[x - 1]:.1f}" for x in shown))
    if sim is not None:
        sim.close()
    if args.json:
        write_atomic(Path(args.json), (json.dumps(result, indent=2) + "\n").encode())
    picture_rows = [torch.from_numpy(r).float() / 127.5 - 1 for n in args.events for r in pictures[n]]
    if args.png and picture_rows:
        write_png(args.png, strip(picture_rows))
        print(f"wrote {args.png}: per onset, rows real with / real without / model with / model without")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))  # a missing or foreign checkpoint: one error line, exit 2

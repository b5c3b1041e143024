#!/usr/bin/env python
"""Does neural Breakout play like Breakout? One player, the real game and the model, closed loop.

Open-loop figures (`train.py eval`) start every rollout from real frames and feed recorded
actions. Play is different: each frame is drawn from the model's own earlier frames and each
action answers what the model drew. This benchmark lets the scripted Breakout player, reading
positions from the pixels (engine/breakout_view.py), play `--steps` steps of the real game
(its frames area-resized to the model's resolution, so the player sees what a model draws) and
of the world model with each `--sampler` preset, and counts per 1,000 steps:

- **ball seen**: share of frames with something red in the field (red above green by
  BALL_REDNESS): the ball, or a model's speckles and ghosts;
- **ball flying**: share of steps that move the ball along a flight: seen on 4+ consecutive
  steps, one way up or down by 3+ rows of 64, each move at most 5 rows and columns (ghosts
  that flicker between fixed spots, and speckles, make no flight);
- **returns**: a flight down into the low field, then within 4 steps a flight up (off the paddle);
- **bricks broken / regrown**: the bricks lost or gained where a brick-wide column of the wall
  loses (gains) at least half a brick from one step to the next and stays so for two steps (a
  model's wall flickers from frame to frame): crisp breaks, as the real game's;
- **bricks lost**: whole bricks the wall loses however slowly: each column's level, the median
  of three steps (flicker drops out), is counted down by the whole bricks it falls once it is
  half a brick below the count (which never rises). A one-step sampler that is unsure on which
  step the ball reaches a brick draws the brick fading over 2-4 steps; the real game loses
  exactly its breaks;
- **points**: the game's rewards, or the model's predicted ones (its HUD score);
- **points on a break / breaks scored**: the share of scoring steps with a lost brick within
  two steps, and of lost bricks with a scoring step within two steps: a score that moves when,
  and only when, a brick disappears reads 1 / 1;
- **ends**: episodes ended (the real game after its last life; the model by predicted termination).

examples:
  python benchmarks/neural_play.py --checkpoint checkpoints/breakout-diffusion
  python benchmarks/neural_play.py --checkpoint RUN --steps 2000 --sampler fast quality --json play.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.autopilot import BreakoutPlayer  # noqa: E402
from engine.breakout_view import BreakoutObjects, read_breakout  # noqa: E402
from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from engine.files import write_atomic  # noqa: E402
from engine.simulator import Simulator  # noqa: E402

LOW_FIELD = 0.6  # a return turns below this share of the field's rows (the paddle is under it)
RETURN_GAP = 4  # steps from the end of a flight down to the start of the flight up
FLIGHT_SIGHTINGS = 4  # a flight is seen on at least this many consecutive steps ...
RISE = 0.05  # ... and climbs or falls by at least this share of the height (3 rows of 64)
MAX_STEP = 0.08  # a flying ball moves at most this share of the width and height per step (~0.03)


def play(sim: Simulator, small: Callable[[np.ndarray], np.ndarray], steps: int, seed: int) -> dict[str, Any]:
    """`steps` steps of the scripted player on `sim`, reading the pixels of the frames `small`
    makes. Returns per-step views, rewards and episode boundaries for `score`."""
    policy = BreakoutPlayer(sim.spec, np.random.default_rng(seed), pixels=True)
    policy.reset()
    frame = small(sim.reset(seed))
    views: list[BreakoutObjects] = [read_breakout(frame)]
    rewards: list[float] = []
    starts = {0}  # indices into views where an episode begins: no change is read across them
    ends = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        st = sim.step(policy.act(frame, sim))
        frame = small(st.frame)
        views.append(read_breakout(frame))
        rewards.append(float(st.reward))
        if st.terminated or st.truncated:
            ends += 1
            policy.reset()
            frame = small(sim.reset(seed + ends))
            starts.add(len(views))
            views.append(read_breakout(frame))
            rewards.append(0.0)
    return {"views": views, "rewards": rewards, "starts": starts, "ends": ends,
            "steps_per_s": steps / (time.perf_counter() - t0)}


Sighting = tuple[int, float, float]
"""(step, x, y) of the ball, x and y as shares of the frame."""


def flights(seen: list[Sighting]) -> list[list[Sighting]]:
    """Split sightings into flights: runs on consecutive steps, each move at a ball's speed (at
    most MAX_STEP across and down), one way up or down, at least FLIGHT_SIGHTINGS long and RISE
    high. A sampler's speckles jump about, and ghosts of the ball that flicker between a few
    fixed spots turn back at every step: neither makes a flight."""
    out: list[list[Sighting]] = []
    run: list[Sighting] = []
    sign = 0.0
    for s in seen:
        if run:
            p = run[-1]
            dy = s[2] - p[2]
            step = s[0] == p[0] + 1 and abs(s[1] - p[1]) <= MAX_STEP and abs(dy) <= MAX_STEP
            if step and dy * sign >= 0:
                run.append(s)
                sign = sign or float(np.sign(dy))
                continue
            out.append(run)
            # A bounce turns the ball: the last sighting starts the next flight too.
            run, sign = ([p, s], float(np.sign(dy))) if step else ([s], 0.0)
            continue
        run = [s]
    out.append(run)
    return [f for f in out if len(f) >= FLIGHT_SIGHTINGS and abs(f[-1][2] - f[0][2]) >= RISE]


def count_returns(fl: list[list[Sighting]]) -> int:
    """Returns off the paddle: a flight down that ends low in the field followed within
    RETURN_GAP steps (the paddle's rows hide the ball at the turn) by a flight up."""
    low = (96 + LOW_FIELD * (189 - 96)) / 210
    return sum(1 for a, b in zip(fl, fl[1:]) if a[-1][2] > a[0][2] and b[-1][2] < b[0][2]
               and a[-1][2] >= low and b[0][0] - a[-1][0] <= RETURN_GAP)


def bricks_lost(wall: np.ndarray, starts: set[int]) -> np.ndarray:
    """(views, columns) bricks per brick-wide column -> (views,) whole bricks lost at each view.

    Each column keeps a count, its level at the episode's start (the median of its first three
    views); a brick is lost when the column's median over three views (the view and one either
    side; at an episode's last view, the higher of the last two) falls half a brick below the
    count, which then drops by the whole bricks lost (rounded). The count never rises: a
    model's half-broken column that flickers between two levels, or a wall that dims and comes
    back, loses its bricks once, not at every dip (regrowth is `bricks_regrown`'s)."""
    lost = np.zeros(len(wall))
    bounds = sorted({*starts, len(wall)})
    for a, b in zip(bounds, bounds[1:]):  # one episode: views a..b-1
        w = wall[a:b]
        level = np.median(w[: min(3, len(w))], axis=0)  # (columns,)
        for t in range(1, len(w)):
            # Two views have no median: at the last view both must be down (a one-view dip is flicker).
            v = np.median(w[t - 1: t + 2], axis=0) if t + 1 < len(w) else w[t - 1: t + 1].max(0)
            down = level - v >= 0.5
            n = np.maximum(1, np.round(level - v)) * down
            lost[a + t] = float(n.sum())
            level = level - n
    return lost


def score(run: dict[str, Any]) -> dict[str, float]:
    """Per-1,000-step figures (module docstring) from `play`'s output."""
    views: list[BreakoutObjects] = run["views"]
    rewards = np.asarray(run["rewards"])
    steps = len(rewards) - len(run["starts"]) + 1  # the rows added at a reset are not steps
    per_k = 1000.0 / steps
    wall = np.stack([v.wall for v in views])  # (views, 18) bricks per brick-wide column
    change = np.zeros((len(rewards), 2, wall.shape[1]))  # (steps, the next two views, columns)
    for t in range(len(rewards)):
        d: list[np.ndarray] = []
        for u in (t + 1, t + 2):
            if u >= len(views) or u in run["starts"]:
                break  # no change is read across a reset
            d.append(wall[u] - wall[t])
        change[t] = (d + d)[:2] if d else 0.0
    # A break (regrowth) is a column losing (gaining) at least half a brick for two steps: a
    # model's wall flickers from frame to frame, a real brick stays gone.
    lost = np.where(change.max(1) <= -0.5, -change[:, 0], 0.0)  # (steps, columns)
    gained = np.where(change.min(1) >= 0.5, change[:, 0], 0.0)
    gone = bricks_lost(wall, run["starts"])[1:]  # (steps,): view t+1 is the step t's outcome
    breaks = gone > 0
    scoring = rewards > 0

    def near(a: np.ndarray, b: np.ndarray) -> float:
        """Share of True steps of a with a True step of b within two steps; nan when a has none."""
        if not a.any():
            return float("nan")
        b2 = b.copy()
        for k in (1, 2):
            b2[k:] |= b[:-k]
            b2[:-k] |= b[k:]
        return float((a & b2).sum() / a.sum())

    fl = flights([(t, *v.ball) for t, v in enumerate(views) if v.ball is not None])
    flying = len({s[0] for f in fl for s in f[1:]})  # steps that move the ball along a flight
    return {
        "ball_seen": float(np.mean([v.ball is not None for v in views])),
        "ball_flying": flying / steps,
        "returns": count_returns(fl) * per_k,
        "bricks_broken": float(lost.sum() * per_k),
        "bricks_regrown": float(gained.sum() * per_k),
        "bricks_lost": float(gone.sum() * per_k),
        "points": float(rewards[scoring].sum() * per_k),
        "points_on_break": near(scoring, breaks),
        "breaks_scored": near(breaks, scoring),
        "ends": run["ends"] * per_k,
        "steps_per_s": float(run["steps_per_s"]),
    }


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a Breakout world model run directory")
    p.add_argument("--steps", type=int, default=1000, help="steps played on each simulator (default 1000)")
    p.add_argument("--sampler", nargs="+", metavar="PRESET", help="model sampler presets (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode and of the player (default 0)")
    p.add_argument("--device", default="cpu", help="where the model runs (default cpu)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = p.parse_args()
    if args.steps < 10:
        raise UserError("--steps must be >= 10")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: no such directory")

    from engine.games import make_simulator
    from models.data import resize_frames
    from models.neural_sim import open_neural_simulator

    neural = open_neural_simulator(args.checkpoint, device=args.device)
    if neural.spec.name != "breakout":
        raise UserError(f"{args.checkpoint} is a {neural.spec.name} model; this benchmark plays Breakout")
    r = int(neural.model.resolution)

    def small(frame: np.ndarray) -> np.ndarray:  # (H, W, 3) -> (R, R, 3), as the model sees the game
        return resize_frames(frame[None], r)[0].transpose(1, 2, 0) if frame.shape[0] != r else frame

    results: dict[str, Any] = {"checkpoint": args.checkpoint, "steps": args.steps, "seed": args.seed}
    real = make_simulator("breakout", audio=False, seed=args.seed)
    try:
        results["real"] = score(play(real, small, args.steps, args.seed))
    finally:
        real.close()
    for preset in args.sampler or [neural.sampler]:
        neural.set_sampler(preset)
        results[preset] = score(play(neural, small, args.steps, args.seed))

    keys = [k for k in results["real"] if k != "steps_per_s"]
    print(f"per 1,000 steps of the pixel-reading player ({args.steps} steps each)")
    print(f"{'':<12}" + "".join(f"{k:>16}" for k in keys))
    for name in ["real", *(args.sampler or [neural.sampler])]:
        print(f"{name:<12}" + "".join(f"{results[name][k]:>16.2f}" for k in keys))
    if args.json:
        write_atomic(Path(args.json), json.dumps(results, indent=1).replace("NaN", "null").encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

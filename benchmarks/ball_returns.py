#!/usr/bin/env python
"""Does a Breakout world model send the ball back off the paddle, let it through when the
paddle is elsewhere, and fly a returned ball up to break a brick?

In closed-loop play (benchmarks/neural_play.py) a model may fly the ball and still never return
it; the pixel player may then be to blame, or the model. This benchmark takes the player out:
from real, event-free context windows whose last frame shows the ball low in the field and
falling, it rolls the model `--horizon` steps with the recorded actions, per sampler preset,
and reads the ball's position in every frame (engine/breakout_view.py) as the pixel player does.

- **Return windows**: the real ball comes back up (2+ rows of 64 above its last context
  sighting, within 8 columns of it) within the horizon. *Returned*: the share where the model's
  ball is within 3 pixels of the real one on some step after the real one has risen.
- **Miss windows**: the real ball is not seen in the field for the whole horizon (the paddle was
  elsewhere). *Sent back anyway*: the share where the model draws a ball that comes back up as
  a return would (2+ rows above, within 8 columns): a model that returns every ball, paddle or
  not, scores high here.

A model that reads the paddle returns most return windows and sends back few miss windows.

- **Climb windows**: the context's last two frames show the ball low and rising (it has just
  come off the paddle), and the real wall loses a brick within `--climb-horizon` steps (in the
  real game nearly every return breaks one). *Reached the wall*: the share where the model's
  ball is seen just under the wall (the ball band's top rows, above half the frame's height,
  where every real climb is seen); *broke a brick*: the share where its wall loses a whole
  brick (neural_play.py's `bricks_lost`, which counts a fade over several steps too).

examples:
  python benchmarks/ball_returns.py --checkpoint checkpoints/breakout-diffusion --data data/breakout_eval
  python benchmarks/ball_returns.py --checkpoint RUN --data DIR --sampler fast --json returns.json
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

from brick_memory import open_breakout  # noqa: E402  (this directory: sys.path[0])
from neural_play import bricks_lost  # noqa: E402

from engine.breakout_view import read_breakout  # noqa: E402
from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from engine.files import write_atomic  # noqa: E402
from models.metrics import rollout  # noqa: E402
from models.world import EVENT_DIM  # noqa: E402

LOW = 50 / 64  # the last context sighting lies this low in the field (the paddle's top: 58 of 64)
RISE = 2 / 64  # a ball back up by this much of the height has come off the paddle
NEAR_X = 8 / 64  # ...within this much of the width of where it went down
MATCH = 3 / 64  # a model's ball this close (rows and columns) to the real one is the real one


Spot = tuple[float, float] | None


def read(frames: np.ndarray) -> tuple[list[Spot], np.ndarray]:
    """(N, 3, R, R) uint8 frames, read once each -> the ball's (x, y) per frame (shares of the
    width and height, or None) and (N, 18) bricks per brick-wide column of the wall."""
    views = [read_breakout(np.ascontiguousarray(f.transpose(1, 2, 0))) for f in frames]
    return [v.ball for v in views], np.stack([v.wall for v in views])


def sightings(frames: np.ndarray) -> list[Spot]:
    """(N, 3, R, R) uint8 frames -> the ball's (x, y), shares of the width and height, or None."""
    return read(frames)[0]


Views = list[tuple[list[Spot], np.ndarray]]
"""Per episode, `read` of its frames: the window finders share one reading of the data."""


def read_episodes(recs: Any) -> Views:
    return [read(np.asarray(ep.frames)) for ep in recs.episodes]


def rises(spot: Spot, last: tuple[float, float]) -> bool:
    """`spot` is the ball come back up from `last` (its sighting going down)."""
    return spot is not None and spot[1] <= last[1] - RISE and abs(spot[0] - last[0]) <= NEAR_X


def find_windows(recs: Any, context: int, horizon: int, views: Views | None = None
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(episode, start) of the return windows and of the miss windows (see the module doc);
    `views`: `read_episodes(recs)` if already read."""
    returns, misses = [], []
    for e, (ep, (seen, _)) in enumerate(zip(recs.episodes, views or read_episodes(recs))):
        events = np.asarray(ep.events)
        for s in range(ep.num_steps - context - horizon + 1):
            last, before = seen[s + context - 1], seen[s + context - 2]
            if last is None or before is None or last[1] < LOW or last[1] <= before[1]:
                continue  # no ball low and falling at the end of the context
            if events[s: s + context - 1 + horizon].any():
                continue
            ahead = seen[s + context: s + context + horizon]
            if any(rises(b, last) for b in ahead):
                returns.append((e, s))
            elif all(b is None for b in ahead):
                misses.append((e, s))
    return returns, misses


def find_climbs(recs: Any, context: int, horizon: int, views: Views | None = None) -> list[tuple[int, int]]:
    """(episode, start) of the climb windows (see the module doc); `views` as for find_windows."""
    out = []
    for e, (ep, (seen, wall)) in enumerate(zip(recs.episodes, views or read_episodes(recs))):
        events = np.asarray(ep.events)
        for s in range(ep.num_steps - context - horizon + 1):
            last, before = seen[s + context - 1], seen[s + context - 2]
            if last is None or before is None or last[1] < LOW or last[1] >= before[1]:
                continue  # no ball low and rising at the end of the context
            if events[s: s + context - 1 + horizon].any():
                continue
            if bricks_lost(wall[s + context - 1: s + context + horizon], {0}).any():
                out.append((e, s))
    return out


def climbed(real: np.ndarray, made: np.ndarray, context: int) -> tuple[float, float]:
    """(share of windows whose model ball is seen above half the frame's height, just under the
    wall, share whose model wall loses a brick) over windows of real (B, C+H, ...) and made
    (B, H, ...) frames."""
    reached = broke = 0
    for r, m in zip(real, made):
        seen, wall = read(np.concatenate([r[context - 1: context], m]))  # the last real frame, then the model's
        reached += any(b is not None and b[1] < 0.5 for b in seen[1:])
        broke += bool(bricks_lost(wall, {0}).any())
    return reached / len(real), broke / len(real)


def stack(recs: Any, picks: list[tuple[int, int]], context: int, horizon: int) -> tuple[np.ndarray, torch.Tensor]:
    """Real frames (B, C+H, 3, R, R) uint8 and recorded actions (B, C-1+H) of the windows."""
    eps = recs.episodes
    real = np.stack([np.asarray(eps[e].frames[s: s + context + horizon]) for e, s in picks])
    actions = torch.stack([torch.from_numpy(np.asarray(eps[e].actions[s: s + context - 1 + horizon]))
                           for e, s in picks]).long()
    return real, actions


def roll(model: Any, real: np.ndarray, actions: torch.Tensor, horizon: int) -> np.ndarray:
    """The model's (B, H, 3, R, R) uint8 rollouts from the first C of `real`'s frames."""
    C = int(model.context_frames)
    events = torch.zeros(len(real), C - 1 + horizon, EVENT_DIM)
    context = torch.from_numpy(real[:, :C]).float() / 127.5 - 1
    with torch.no_grad():
        frames, _, _ = rollout(model, context, actions, events, horizon, torch.Generator().manual_seed(0))
    return ((frames + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def score(real: np.ndarray, made: np.ndarray, context: int) -> tuple[float, float]:
    """(share of windows where the model's ball matches a real risen one, share where the
    model's ball rises at all) over windows of real (B, C+H, ...) and made (B, H, ...) frames."""
    matched = risen = 0
    for r, m in zip(real, made):
        last = sightings(r[context - 1: context])[0]
        assert last is not None
        truth, drawn = sightings(r[context:]), sightings(m)
        risen += any(rises(b, last) for b in drawn)
        matched += any(rises(t, last) and b is not None and t is not None
                       and max(abs(b[0] - t[0]), abs(b[1] - t[1])) <= MATCH for t, b in zip(truth, drawn))
    return matched / len(real), risen / len(real)


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a Breakout world model run directory")
    p.add_argument("--data", required=True, metavar="DIR", help="held-out Breakout recordings")
    p.add_argument("--windows", type=int, default=64, help="windows of each kind at most (default 64)")
    p.add_argument("--horizon", type=int, default=6, help="steps rolled (default 6: a return takes 3-5)")
    p.add_argument("--climb-horizon", type=int, default=24,
                   help="steps rolled from a return up to the wall (default 24: a climb takes 10-20)")
    p.add_argument("--sampler", nargs="+", metavar="PRESET", help="sampler presets (default: all the model has)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if args.windows < 1 or args.horizon < 2 or args.climb_horizon < 2:
        raise UserError("--windows must be >= 1, and --horizon and --climb-horizon >= 2")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: no such directory")
    run, recs = open_breakout(args.checkpoint, args.data, "how Breakout's ball comes back off the paddle")
    model, C = run.model, int(run.model.context_frames)
    presets = args.sampler or list(model.sampler_presets)
    unknown = sorted(set(presets) - set(model.sampler_presets))
    if unknown:
        raise UserError(f"no sampler preset {unknown[0]!r}; this model has {', '.join(model.sampler_presets)}")
    views = read_episodes(recs)  # every frame read once, for both finders
    returns, misses = find_windows(recs, C, args.horizon, views)
    if not returns or not misses:
        raise UserError(f"{args.data} has {len(returns)} event-free windows where the ball comes back off "
                        f"the paddle and {len(misses)} where it is missed; record more play (both are needed)")
    climbs = find_climbs(recs, C, args.climb_horizon, views)
    if not climbs:
        raise UserError(f"{args.data} has no event-free windows where the ball climbs from the paddle to the "
                        f"wall and breaks a brick within {args.climb_horizon} steps; record more play")
    result: dict[str, Any] = {"checkpoint": args.checkpoint, "horizon": args.horizon,
                              "climb_horizon": args.climb_horizon, "return_windows": len(returns),
                              "miss_windows": len(misses), "climb_windows": len(climbs)}
    n = args.windows
    print(f"{len(returns)} return, {len(misses)} miss and {len(climbs)} climb windows in {args.data}; "
          f"using {min(len(returns), n)}, {min(len(misses), n)} and {min(len(climbs), n)}")
    # Real frames and actions once per kind; every preset rolls from the same windows.
    kept = [stack(recs, w[:: max(1, len(w) // n)][:n], C, h)
            for w, h in ((returns, args.horizon), (misses, args.horizon), (climbs, args.climb_horizon))]
    for name in presets:
        model.set_sampler(name)
        (real, actions), (real_miss, actions_miss), (real_climb, actions_climb) = kept
        returned, _ = score(real, roll(model, real, actions, args.horizon), C)
        _, sent_back = score(real_miss, roll(model, real_miss, actions_miss, args.horizon), C)
        reached, broke = climbed(real_climb, roll(model, real_climb, actions_climb, args.climb_horizon), C)
        result[name] = {"returned": round(returned, 3), "miss_sent_back": round(sent_back, 3),
                        "climb_reached_wall": round(reached, 3), "climb_broke_brick": round(broke, 3)}
        print(f"  {name:<9} returned {returned:.2f} of the returns; sent back {sent_back:.2f} of the misses; "
              f"from a return reached the wall {reached:.2f}, broke a brick {broke:.2f}")
    if args.json:
        write_atomic(Path(args.json), (json.dumps(result, indent=1) + "\n").encode(), durable=False)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

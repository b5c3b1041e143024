"""Measure what world events cost: each look overlay per frame, and a real game's steps/s with and
without an EventLayer running a random schedule (what `train.py collect --events random` does).

    python scripts/bench_events.py [--steps 3000] [--games breakout carracing]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def bench_looks(repeats: int = 300) -> None:
    from engine.looks import LOOKS, apply_looks

    rng = np.random.default_rng(0)
    for shape in [(210, 160, 3), (96, 96, 3)]:
        frame = rng.integers(0, 256, shape, dtype=np.uint8)
        cells = []
        for name, look in LOOKS.items():
            for t in range(10):
                look(frame, t, 1)  # build the cached layouts first
            t0 = time.perf_counter()
            for t in range(repeats):
                look(frame, t, 1)
            cells.append(f"{name} {(time.perf_counter() - t0) / repeats * 1e6:.0f}")
        every = {n: (20, 1) for n in LOOKS}
        t0 = time.perf_counter()
        for _ in range(repeats):
            apply_looks(frame, every)
        cells.append(f"all six {(time.perf_counter() - t0) / repeats * 1e6:.0f}")
        print(f"{shape[0]}x{shape[1]} overlay us/frame: " + ", ".join(cells))


def bench_game(game: str, steps: int) -> None:
    from engine.events import EventLayer, events_at, random_schedule
    from engine.games import make_simulator

    rates = {}
    for mode in ("plain", "events"):
        sim: Any = make_simulator(game, audio=False, seed=0)  # the game, or the game under EventLayer
        schedule = []
        if mode == "events":
            sim = EventLayer(sim, seed=0)
            schedule = random_schedule(np.random.default_rng(0), game, steps)
        rng = np.random.default_rng(0)
        sim.reset(0)
        active_steps = 0
        t0 = time.perf_counter()
        for t in range(steps):
            active = events_at(schedule, t)
            active_steps += bool(active)
            st = sim.step(int(rng.integers(sim.spec.num_actions)), active)
            if st.terminated or st.truncated:
                sim.reset()
        rates[mode] = steps / (time.perf_counter() - t0)
        sim.close()
        if mode == "events":
            print(f"{game}: {len(schedule)} events scheduled, active on {active_steps / steps:.0%} of steps")
    slow = 1 - rates["events"] / rates["plain"]
    print(f"{game}: {rates['plain']:.0f} steps/s plain, {rates['events']:.0f} with random events ({slow:.0%} slower)")


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="steps per game and mode")
    ap.add_argument("--games", nargs="+", default=["breakout", "carracing"])
    args = ap.parse_args()
    bench_looks()
    for game in args.games:
        bench_game(game, args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""How fast `train.py collect` records: Atari steps per second per worker, writing included.

Plays the real game with the chosen player exactly as collect does (one emulator frame at a
time with audio, recorder with 1-second chunks, zlib level 1), once without writing and once
with it, and prints steps/s by wall clock and by the worker's own CPU time. On a machine shared
with other jobs the CPU-time figure is the worker's real capacity; wall clock includes waiting.

    python benchmarks/collect_speed.py                       # breakout, scripted, 1 worker
    python benchmarks/collect_speed.py --workers 4 --steps 5000 --json speed.json
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

TARGET = 2000.0


@dataclass
class Speed:
    steps: int
    episodes: int
    wall_s: float
    cpu_s: float
    setup_wall_s: float
    """Simulator construction + seeded reset (ALE reloads the ROM to seed), per run total."""
    setup_cpu_s: float
    bytes_written: int

    @property
    def wall_rate(self) -> float:
        return self.steps / self.wall_s

    @property
    def cpu_rate(self) -> float:
        return self.steps / self.cpu_s

    @property
    def steady_rate(self) -> float:
        """CPU-time rate without the per-episode setup: the stepping + writing itself."""
        return self.steps / max(self.cpu_s - self.setup_cpu_s, 1e-9)


def measure(game: str, policy_kind: str, steps: int, write: bool, seed: int, audio: bool,
            deflate: str = "auto") -> Speed:
    import zlib

    import engine.files as files
    from engine.autopilot import make_policy
    from engine.games import make_simulator
    from engine.recorder import Recorder

    if deflate == "zlib":
        files.DEFLATE = zlib

    out = tempfile.mkdtemp(prefix="collect-speed-")
    done = episodes = 0
    setup = setup_cpu = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        while done < steps:
            s0, sc0 = time.perf_counter(), time.process_time()
            sim = make_simulator(game, seed=seed + episodes, audio=audio)
            frame = sim.reset(seed=seed + episodes)
            setup += time.perf_counter() - s0
            setup_cpu += time.process_time() - sc0
            policy = make_policy(policy_kind, sim.spec, seed + episodes)
            rec = Recorder(out, sim.spec, durable=False) if write else None
            if rec:
                rec.begin_episode(frame, seed + episodes)
            while done < steps:
                action = policy.act(frame, sim)
                step = sim.step(action)
                if rec:
                    rec.add(action, step)
                frame = step.frame
                done += 1
                if step.terminated or step.truncated:
                    break
            if rec:
                rec.close()
            episodes += 1
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return Speed(done, episodes, wall, cpu, setup, setup_cpu, size)


def _measure_star(a: tuple) -> Speed:
    return measure(*a)


def main() -> int:
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--game", default="breakout")
    p.add_argument("--policy", default="scripted", choices=("scripted", "random"))
    p.add_argument("--steps", type=int, default=3000, help="steps per worker and mode (default 3000)")
    p.add_argument("--workers", type=int, default=1, help="processes recording at once (default 1)")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--deflate", choices=("auto", "zlib"), default="auto",
                   help="auto: the fastest installed (isal > zlib-ng > zlib); zlib: the standard one")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    audio = not args.no_audio
    from engine.files import DEFLATE

    backend = "zlib" if args.deflate == "zlib" else DEFLATE.__name__
    print(f"chunk compression: {backend} level 1")
    report: dict[str, object] = {"game": args.game, "policy": args.policy, "workers": args.workers,
                                 "audio": audio, "deflate": backend, "target_steps_per_s": TARGET}
    for write in (False, True):
        mode = "with writing" if write else "play only"
        jobs = [(args.game, args.policy, args.steps, write, 1000 * w, audio, args.deflate)
                for w in range(args.workers)]
        t0 = time.perf_counter()
        if args.workers == 1:
            speeds = [measure(*jobs[0])]
        else:
            with mp.get_context("spawn").Pool(args.workers) as pool:
                speeds = pool.map(_measure_star, jobs)
        total_wall = time.perf_counter() - t0
        wall = sum(s.wall_rate for s in speeds) / len(speeds)
        cpu = sum(s.cpu_rate for s in speeds) / len(speeds)
        steady = sum(s.steady_rate for s in speeds) / len(speeds)
        total = sum(s.steps for s in speeds)
        eps = sum(s.episodes for s in speeds)
        print(f"{args.game}/{args.policy} {mode:>12}: per worker {wall:6.0f} steps/s wall, "
              f"{cpu:6.0f} per CPU-second, {steady:6.0f} per CPU-second without the per-episode "
              f"setup ({eps} episodes); {args.workers} worker(s) together {total / total_wall:6.0f} steps/s")
        key = "write" if write else "play"
        report[key] = {"per_worker_wall": wall, "per_worker_steady": steady, "per_worker_cpu": cpu,
                       "all_workers": total / total_wall, "runs": [asdict(s) for s in speeds]}
        if write:
            nbytes = sum(s.bytes_written for s in speeds)
            print(f"  on disk: {nbytes / total / 1024:.1f} KiB per step "
                  f"(raw frame {210 * 160 * 3 / 1024:.0f} KiB + audio)")
            verdict = "meets" if steady >= TARGET else "BELOW"
            print(f"collect speed: {steady:.0f} steps/s per worker incl. writing (per CPU-second, "
                  f"setup excluded; {cpu:.0f} with setup, {wall:.0f} by wall clock) -> {verdict} "
                  f"the {TARGET:.0f} steps/s target")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU speed of an autoregressive world model, end to end through NeuralSimulator.step.

Reports, per sampler preset, the wall-clock p50 and the process CPU time per frame. On a shared
machine the CPU time is the steadier figure: it is what one quiet core would take (wall time
grows with every other process). Runs from a checkpoint, or from an untrained model of a preset
(weights do not change the speed).

    OMP_NUM_THREADS=1 python benchmarks/ar_speed.py --preset small --threads 1
    python benchmarks/ar_speed.py --checkpoint runs/ar --threads 2 --frames 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def build(args: argparse.Namespace):  # -> NeuralSimulator
    from engine.games import find_game
    from models.config import resolve_config
    from models.neural_sim import NeuralSimulator, open_neural_simulator
    from models.registry import build_model

    if args.checkpoint:
        return open_neural_simulator(args.checkpoint, device="cpu")
    config = resolve_config(ROOT / "assets/configs/breakout-autoregressive.yaml", [f"preset={args.preset}"])
    spec = find_game(config["game"])
    model: Any = build_model(config, spec).eval()  # ARWorldModel (the registry returns a Module)
    c = model.context_frames
    frames = torch.randint(0, 255, (1, c, 3, 64, 64), dtype=torch.uint8)
    return NeuralSimulator(model, spec, frames, torch.zeros(1, c - 1, dtype=torch.long), {},
                           torch.device("cpu"), model_name=f"autoregressive {args.preset}")


def main() -> None:
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="run directory (default: an untrained --preset model)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per preset; the best is kept")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sim = build(args)
    params = sum(p.numel() for p in sim.model.parameters())
    out: dict[str, object] = {"threads": args.threads, "params": params, "frames": args.frames}
    print(f"{sim.model_name}: {params / 1e6:.2f}M params, {args.threads} thread(s)")
    for name in sim.sampler_presets:
        sim.set_sampler(name)
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeat):
            sim.reset(0)
            for i in range(10):  # warm-up: allocator, oneDNN primitives
                sim.step(i % sim.spec.num_actions)
            wall, cpu = [], []
            for i in range(args.frames):
                w, c = time.perf_counter(), time.process_time()
                sim.step(i % sim.spec.num_actions)
                wall.append(time.perf_counter() - w)
                cpu.append(time.process_time() - c)
            best_wall = min(best_wall, statistics.median(wall) * 1e3)
            best_cpu = min(best_cpu, statistics.median(cpu) * 1e3)
        out[name] = {"wall_p50_ms": round(best_wall, 2), "wall_fps": round(1e3 / best_wall, 1),
                     "cpu_ms_per_frame": round(best_cpu, 2)}
        print(f"{name:10s} wall p50 {best_wall:7.2f} ms ({1e3 / best_wall:5.1f} FPS)   "
              f"CPU time {best_cpu:7.2f} ms/frame")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

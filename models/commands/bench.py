"""`train.py bench`: batch-1 speed of a trained model, per sampler preset, as the play loop sees it.

Each frame is timed around `NeuralSimulator.step` (action in, uint8 frame out on the host), so
the figure includes conversions and, on a GPU, the wait for the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HELP = """\
Measure how fast a trained world model plays: for every sampler preset, generate N frames at
batch 1 with random actions and report ms/frame (p50, p99), frames per second and peak memory.

examples:
  python train.py bench --checkpoint runs/bk
  python train.py bench --checkpoint runs/bk --device cuda --frames 500 --json bench.json
  python train.py bench --checkpoint runs/bk --device cuda --compile --sampler quality
  OMP_NUM_THREADS=2 python train.py bench --checkpoint runs/bk --device cpu --sampler fast
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommand(s) to train.py's parser."""
    p = sub.add_parser("bench", help="batch-1 ms/frame, FPS and memory per sampler preset",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory from train.py fit")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--frames", type=int, default=200, metavar="N", help="timed frames per preset (200)")
    p.add_argument("--warmup", type=int, default=10, metavar="N",
                   help="untimed frames first (CUDA graph capture, allocator, caches) (10)")
    p.add_argument("--sampler", action="append", metavar="NAME",
                   help="bench only this preset (repeatable); default: every preset")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the step (on CUDA inside the CUDA graph); warm-up compiles")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.set_defaults(func=run)


def peak_memory_mb(device: Any) -> float:
    """Peak CUDA memory allocated since the last reset, or the process's peak resident memory."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_simulator(sim: Any, frames: int, warmup: int = 10, seed: int = 0) -> dict[str, float]:
    """Time `frames` steps of a (neural) simulator at its current sampler; random actions.

    Returns p50_ms, p99_ms, mean_ms, fps (1000 / mean), peak_mem_mb and cpu_ms_p50: the
    process CPU time per frame, which on a shared, busy machine estimates the wall time the
    same work takes on an idle one (with one torch thread; more threads add their spin time).
    """
    import numpy as np
    import torch

    device = getattr(sim, "device", torch.device("cpu"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rng = np.random.default_rng(seed)
    sim.reset(seed)
    times, cpu_times = [], []
    for i in range(warmup + frames):
        t0, c0 = time.perf_counter(), time.process_time()
        sim.step(int(rng.integers(sim.spec.num_actions)))
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
            cpu_times.append((time.process_time() - c0) * 1000)
    ms = np.asarray(times)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(ms.mean()), 3),
            "fps": round(1000.0 / float(ms.mean()), 1),
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "cpu_ms_p50": round(float(np.percentile(cpu_times, 50)), 3)}


def device_label(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def run(args: argparse.Namespace) -> int:
    import torch

    from engine.errors import UserError, output_file
    from engine.files import write_atomic
    from models.neural_sim import open_neural_simulator

    if args.frames < 1:
        raise UserError("--frames must be at least 1")
    if args.warmup < 0 or args.threads < 0:
        raise UserError("--warmup and --threads must be >= 0")
    json_path = output_file(args.json) if args.json else None  # a bad path fails before the work
    if args.threads:
        torch.set_num_threads(args.threads)
    sim = open_neural_simulator(args.checkpoint, device=args.device, compile=args.compile)
    presets = args.sampler or list(sim.sampler_presets)
    for name in presets:
        if name not in sim.sampler_presets:
            raise UserError(f"unknown sampler preset '{name}'; choose one of: {', '.join(sim.sampler_presets)}")
    result: dict[str, Any] = {
        "checkpoint": str(Path(args.checkpoint)),
        "device": device_label(sim.device),
        "params": int(sum(p.numel() for p in sim.model.parameters())),
        "frames": args.frames,
        "compile": args.compile,
        "presets": presets,
    }
    print(f"{sim.model_name}: {result['params'] / 1e6:.2f}M params on {result['device']}, "
          f"{args.frames} frames per preset", file=sys.stderr)
    print(f"{'preset':<10} {'p50 ms':>8} {'p99 ms':>8} {'fps':>8} {'peak MB':>9}")
    for name in presets:
        sim.set_sampler(name)
        figures = bench_simulator(sim, args.frames, args.warmup)
        result[name] = figures
        print(f"{name:<10} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} {figures['fps']:>8.1f} "
              f"{figures['peak_mem_mb']:>9.1f}")
    sim.close()
    if json_path is not None:
        write_atomic(json_path, (json.dumps(result, indent=2) + "\n").encode(), durable=False)
        print(f"wrote {json_path}", file=sys.stderr)
    return 0

#!/usr/bin/env python
"""Batch-1 play speed of the diffusion world model per preset and sampler, without a trained run.

Speed does not depend on the weights, so this builds a fresh model from a config preset, wraps it
in `NeuralSimulator` (the object play.py steps) and times `step` like `train.py bench` does.
With --save-run it also writes the untrained model as a run directory, so the full play loop can
be timed: `python play.py --checkpoint DIR --headless --max-steps 500 --device cpu`.

examples:
  OMP_NUM_THREADS=2 python benchmarks/diffusion_speed.py --preset small --device cpu --repeat 3
  python benchmarks/diffusion_speed.py --preset base --device cuda --sampler quality --frames 500
  python benchmarks/diffusion_speed.py --preset base --device cuda --compile     # fused kernels
  python benchmarks/diffusion_speed.py --preset small --compare-cpu     # eager vs NHWC vs compile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.games import find_game  # noqa: E402
from engine.simulator import GameSpec  # noqa: E402
from models.commands.bench import bench_simulator, device_label  # noqa: E402
from models.config import resolve_config  # noqa: E402
from models.diffusion.cuda_graph import GraphedFunction  # noqa: E402
from models.diffusion_world import DiffusionWorldModel  # noqa: E402
from models.neural_sim import NeuralSimulator, resolve_device  # noqa: E402
from models.world import EVENT_DIM  # noqa: E402


def game_spec(name: str) -> GameSpec:
    """The game's spec; a 4-action stand-in where the emulator is not installed (a bare GPU box)."""
    try:
        return find_game(name)
    except Exception:  # noqa: BLE001 - ale-py missing on a bare GPU machine
        return GameSpec(name=name, env_id="", family="atari", action_meanings=("A",) * 4,
                        steps_per_second=15.0)


def build(config: dict, device: torch.device, channels_last: bool = True,
          compile: bool = False) -> NeuralSimulator:
    spec = game_spec(config["game"])
    torch.manual_seed(0)
    model = DiffusionWorldModel.from_config(config, spec).to(device).eval()
    c, r = model.context_frames, model.resolution
    start_frames = torch.randint(0, 256, (2, c, 3, r, r), dtype=torch.uint8)
    start_actions = torch.zeros(2, c - 1, dtype=torch.long)
    sim = NeuralSimulator(model, spec, start_frames, start_actions, {}, device,
                          model_name=f"diffusion {config['preset']} (untrained)", compile=compile)
    if not channels_last:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # untyped in Module.to
    return sim


def main() -> int:
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "assets/configs/breakout-diffusion.yaml"))
    p.add_argument("--preset", default="small")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default="auto")
    p.add_argument("--sampler", action="append", help="preset(s) to time (default: all)")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--repeat", type=int, default=1, help="repeat each measurement; the best is kept")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the step (CUDA: then graphed)")
    p.add_argument("--compare-cpu", action="store_true",
                   help="time eager NCHW, channels-last and torch.compile variants of the fast step")
    p.add_argument("--save-run", metavar="DIR", help="also save the untrained model as a run")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = resolve_config(args.config, [f"preset={args.preset}", *args.set])
    sim = build(config, device, compile=args.compile)

    def save(result: dict) -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")

    params = sum(x.numel() for x in sim.model.parameters())
    result: dict = {"device": device_label(device), "preset": args.preset, "params": params,
                    "torch": torch.__version__}
    print(f"{args.preset}: {params / 1e6:.2f}M params on {result['device']}")

    presets = args.sampler or list(sim.sampler_presets)
    for name in presets:
        sim.set_sampler(name)
        runs = [bench_simulator(sim, args.frames, args.warmup) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["p50_ms"])
        result[name] = {**best, "p50_runs": [r["p50_ms"] for r in runs]}
        print(f"  {name:<9} p50 {best['p50_ms']:7.2f} ms  p99 {best['p99_ms']:7.2f} ms  "
              f"{best['fps']:7.1f} fps  cpu {best['cpu_ms_p50']:.2f} ms  peak {best['peak_mem_mb']:.0f} MB  (p50 of runs {result[name]['p50_runs']})")
        save(result)  # after each preset: a run cut short (a compile past its time) keeps its figures

    if args.compare_cpu:
        sim.set_sampler(presets[0])
        variants = {"nchw_eager": build(config, device, channels_last=False), "nhwc_eager": sim}
        compiled = build(config, device, compile=True)
        t0 = time.perf_counter()
        bench_simulator(compiled, 3, 0)
        print(f"  torch.compile warm-up {time.perf_counter() - t0:.1f} s")
        variants["nhwc_compiled"] = compiled
        for label, s in variants.items():
            s.set_sampler(presets[0])
            runs = [bench_simulator(s, args.frames, args.warmup) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["p50_ms"])
            result[f"{presets[0]}_{label}"] = best
            print(f"  {presets[0]} {label:<14} p50 {best['p50_ms']:7.2f} ms  {best['fps']:7.1f} fps")

    if device.type == "cuda":  # the graphed step must give what the eager step gives
        model = sim.model
        c, r = model.context_frames, model.resolution
        gen = torch.Generator(device=device).manual_seed(0)
        ctx = torch.rand(1, c, 3, r, r, generator=gen, device=device) * 2 - 1
        acts = torch.zeros(1, c, dtype=torch.long, device=device)
        events = model.event_input(torch.zeros(1, EVENT_DIM, device=device), None)  # (1, D or 2D)
        noise = torch.randn(1, 3, r, r, generator=gen, device=device) * 5
        for name in presets:
            model.set_sampler(name)
            with torch.inference_mode():
                eager = model.generate(ctx, acts, events, noise)[0]
                graphed = GraphedFunction(model._step_fn())(ctx, acts, events, noise)[0]
            diff = float((eager - graphed).abs().max())
            result[f"{name}_graph_vs_eager_max_abs"] = diff
            print(f"  {name}: CUDA graph vs eager max |diff| {diff:.2e}")

    if args.save_run:
        from models.checkpoint import save_run

        sim.model.to(memory_format=torch.contiguous_format)
        save_run(args.save_run, ema_model=sim.model, config=config, spec=sim.spec,
                 start_frames=sim.start_frames, start_actions=sim.start_actions, event_bank={},
                 stats={"step": 0, "note": "untrained, for timing only"})
        print(f"saved untrained run to {args.save_run}")
    save(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Training throughput (samples/s) of the diffusion world model's loss step, on random windows.

Times forward + backward + AdamW at a batch size, the way train.py fit runs it (bf16 autocast
on CUDA, optional torch.compile), without the data loader, so it isolates the model's cost.

examples:
  python benchmarks/diffusion_train_speed.py --preset base --device cuda --batch 64 --steps 50
  OMP_NUM_THREADS=2 python benchmarks/diffusion_train_speed.py --preset small --device cpu --batch 32
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

from models.config import apply_overrides, resolve_config  # noqa: E402
from models.diffusion_world import DiffusionConfig, DiffusionWorldModel  # noqa: E402
from models.neural_sim import resolve_device, tune_cuda_backends  # noqa: E402
from models.world import EVENT_DIM, Batch  # noqa: E402


def random_batch(b: int, t: int, r: int, actions: int, device: torch.device) -> Batch:
    return Batch(frames=torch.rand(b, t + 1, 3, r, r, device=device) * 2 - 1,
                 actions=torch.randint(0, actions, (b, t), device=device),
                 rewards=torch.zeros(b, t, device=device), terminations=torch.zeros(b, t, device=device),
                 events=torch.zeros(b, t, EVENT_DIM, device=device),
                 valid=torch.ones(b, t + 1, dtype=torch.bool, device=device))


def main() -> int:
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "assets/configs/breakout-diffusion.yaml"))
    p.add_argument("--preset", default="small")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--channels-last", action="store_true", help="NHWC conv weights (train.channels_last)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. model.rollout_steps=4 (self-rollout training)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    device = resolve_device(args.device)
    config = resolve_config(args.config, [f"preset={args.preset}"])
    config = apply_overrides(config, args.set)
    torch.manual_seed(0)
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4).to(device).train()
    if device.type == "cuda":
        tune_cuda_backends()  # as train.py fit does
        if args.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    loss_fn = torch.compile(model.loss) if args.compile else model.loss
    bf16 = device.type == "cuda" and not args.no_bf16
    batch = random_batch(args.batch, model.train_window, model.resolution, 4, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    result = {"preset": args.preset, "device": str(device), "batch": args.batch, "bf16": bf16,
              "compile": args.compile,
              "channels_last": args.channels_last and device.type == "cuda", "overrides": args.set,
              "ms_per_step": round(dt / args.steps * 1000, 2),
              "samples_per_s": round(args.batch * args.steps / dt, 1), "warmup_s": round(warm_s, 1),
              "params": sum(x.numel() for x in model.parameters())}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

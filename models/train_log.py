"""What a training run reports while it trains: TensorBoard scalars and sample rollouts, and,
without a progress bar, one plain status line a minute.

Apart from the loop in models/trainer.py so that the loop reads as the optimisation alone. Only
the main rank (models/train_runtime.py `Distributed.main`) writes anything.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from models.metrics import psnr, rollout, strip
from models.windows import RawBatch


class TrainLog:
    """TensorBoard writer (when tensorboard is installed) plus the plain status line.

    Args:
        run_dir: the run directory; logs go to run_dir/tensorboard.
        main: whether this process is the main rank (the others log nothing).
        status_lines: print the minute-by-minute status line (when the tqdm bar is off).
        total_steps: the run's step count, for the time left.
    """

    STATUS_EVERY_S = 60.0
    """Seconds between plain status lines (--no-progress, logs, batch jobs)."""
    SCALARS_EVERY = 10
    """Steps between TensorBoard scalars (the trainer reads the loss from the device as often)."""

    def __init__(self, run_dir: Path, main: bool, status_lines: bool, total_steps: int) -> None:
        self.run_dir, self.main, self.total_steps = run_dir, main, total_steps
        self.status_lines = status_lines and main
        self.writer: Any = None
        self._status_at: float | None = None  # when the last status line was printed
        self._status_step = 0
        self._status_wait = 0.0  # data_seconds at the last status line

    def open(self, step: int) -> None:
        """Start the TensorBoard writer; on resume, events logged after `step` are dropped."""
        if not self.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("note: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)")
            return
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=step or None)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def scalar(self, key: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(key, value, step)

    def scalars(self, scalars: dict[str, float], step: int, samples_per_s: float) -> None:
        """The step's losses etc. under train/ (keys with a '/' as given), every SCALARS_EVERY steps."""
        if self.writer is None or step % self.SCALARS_EVERY:
            return
        for key, value in scalars.items():
            self.writer.add_scalar(key if "/" in key else f"train/{key}", value, step)
        self.writer.add_scalar("train/samples_per_s", samples_per_s, step)

    def status(self, step: int, loss: float | torch.Tensor, lr: float, data_seconds: float) -> None:
        """Without a bar, a log of a long run would say nothing until the end: one line a minute
        with the step, smoothed loss, speed, the share of the time the step waited for its batch
        (`data_seconds`: the run's total so far; high means the loader starves the GPU) and the
        time left. `loss` may be a device tensor: it is read only when a line is printed."""
        if not self.status_lines:
            return
        now = time.perf_counter()
        if self._status_at is None:
            self._status_at, self._status_step, self._status_wait = now, step, data_seconds
            return
        if now - self._status_at < self.STATUS_EVERY_S:
            return
        rate = (step - self._status_step) / (now - self._status_at)
        wait = (data_seconds - self._status_wait) / (now - self._status_at)
        left = (self.total_steps - step) / max(rate, 1e-9)
        print(f"fit: step {step}/{self.total_steps}, loss {float(loss):.4f}, lr {lr:.1e}, "
              f"{rate:.2f} steps/s, data wait {wait:.0%}, {left / 60:.0f} min left", flush=True)
        self._status_at, self._status_step, self._status_wait = now, step, data_seconds

    @torch.no_grad()
    def samples(self, model: Any, batch: RawBatch | None, device: torch.device, step: int) -> None:
        """Open-loop rollouts of `model` (the EMA weights) from real (held-out) context: an image
        whose rows alternate real frames and generated ones, and the PSNR of the last frame."""
        if self.writer is None or batch is None:
            return
        c = int(model.context_frames)
        b = batch.to_batch(device)
        steps = b.frames.shape[1] - c
        gen = torch.Generator(device=device).manual_seed(0)
        frames, _, _ = rollout(model, b.frames[:, :c], b.actions, b.events, steps, gen)
        real = b.frames[:, c:]
        rows = [row for i in range(real.shape[0]) for row in (real[i], frames[i])]
        self.writer.add_image("samples/real_over_generated", strip(rows), step, dataformats="HWC")
        self.writer.add_scalar(f"heldout/psnr_at_{steps}", float(psnr(frames[:, -1], real[:, -1]).mean()), step)
        model.eval()

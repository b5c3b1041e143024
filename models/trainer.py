"""The training loop, written once for every world-model family (models/world.py `WorldModel`).

AdamW with linear warm-up, gradient clipping, EMA weights (the ones saved for play), bf16
autocast on CUDA, optional torch.compile, a held-out loss, a tqdm bar, periodic atomic
checkpoints, bit-exact resume, named training stages and DDP under torchrun; TensorBoard scalars,
sample rollouts and the plain status line are models/train_log.py's. Batches come from
`models.windows.WindowSampler`, whose batch i depends only on (seed, rank, i), so a resumed run
draws the same batches an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.simulator import GameSpec
from models.checkpoint import TrainState, load_weights, save_run
from models.config import ConfigError
from models.data import Recordings
from models.neural_sim import tune_cuda_backends
from models.train_config import TrainConfig
from models.train_log import TrainLog
from models.train_runtime import EMA, LossModule, StopFlag, freeze_except, init_distributed, rng_state
from models.windows import RawBatch, WindowSampler, heldout_batches

READ_EVERY = TrainLog.SCALARS_EVERY
"""Steps between reads of the loss and gradient norm from the device (bar, scalars, checks)."""


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norm gains (ndim < 2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise UserError("this training stage has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=device.type == "cuda")


class Trainer:
    """Trains one WorldModel on recordings and writes its run directory.

    Args:
        model: the (untrained, or to be resumed) world model, on `device`.
        config: the resolved config dict (saved into the run).
        spec: the game.
        recs: recordings at the model's resolution; train / held: episode indices.
        event_bank: name -> (P, 384) training-paraphrase embeddings.
        start: (start_frames, start_actions) real contexts stored for play.
        run_dir: the run directory.
        device: where to train.
        progress: show the tqdm bar.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], spec: GameSpec, recs: Recordings,
                 train: list[int], held: list[int], event_bank: dict[str, np.ndarray],
                 start: tuple[torch.Tensor, torch.Tensor], run_dir: str | Path, device: torch.device,
                 progress: bool = True) -> None:
        self.model, self.config, self.spec = model, config, spec
        self.cfg = TrainConfig.parse(config.get("train"))
        self.device, self.run_dir, self.progress = device, Path(run_dir), progress
        self.recs, self.train_eps, self.held_eps = recs, train, held
        self.start_frames, self.start_actions = start
        self.dist = init_distributed(device)
        if device.type == "cuda":
            tune_cuda_backends()  # batch shapes are fixed for a run; TF32 for what autocast leaves in fp32
            if self.cfg.channels_last:
                model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        wm: Any = model
        window = int(wm.train_window)
        if self.cfg.object_crop_fraction > 0 and not getattr(wm, "trains_on_crops", False):
            raise ConfigError(f"train.object_crop: the {config.get('family')} model trains on whole frames only")
        cfg = self.cfg  # by keyword: seventeen settings are easy to misorder
        self.sampler = WindowSampler(
            recs, train, window, cfg.batch_size, event_bank, event_dropout=cfg.event_dropout,
            seed=cfg.seed, rank=self.dist.rank, event_change_fraction=cfg.event_change_fraction,
            event_noise=cfg.event_noise, event_focus=cfg.event_focus, reward_fraction=cfg.reward_fraction,
            object_fraction=cfg.object_fraction, object_region=cfg.region, object_crop=cfg.object_crop,
            object_crop_fraction=cfg.object_crop_fraction, object_appear_fraction=cfg.object_appear_fraction,
            object_bounce_fraction=cfg.object_bounce_fraction)
        self.held_batches: list[RawBatch] = []
        if held and any(recs.episodes[i].num_steps >= window for i in held):
            held_sampler = WindowSampler(recs, held, window, min(self.cfg.batch_size, 16), event_bank,
                                         0.0, seed=12345)
            self.held_batches = heldout_batches(held_sampler, 2)
        # Sample rollouts want a longer stretch of real frames than one training window.
        self.sample_batch: RawBatch | None = None
        context = int(wm.context_frames)
        for horizon in (16, 4, 1):
            eps = [i for i in (held or train) if recs.episodes[i].num_steps >= context - 1 + horizon]
            if eps:
                self.sample_batch = WindowSampler(recs, eps, context - 1 + horizon, 4, event_bank,
                                                  0.0, seed=54321).batch(0)
                break
        # What play looks events up by: the unit mean of each event's training paraphrases.
        self.event_means = {}
        for name, rows in event_bank.items():
            mean = rows.mean(0)
            self.event_means[name] = (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)
        self.events_trained = recs.trained_events(train)
        self.ema = EMA(model, self.cfg.ema_decay)
        self.step = self.stage = self.stage_step = 0
        self.train_seconds = 0.0
        self.data_seconds = 0.0
        """Of train_seconds, the time spent waiting for the window loader (this process only)."""
        self.log = TrainLog(self.run_dir, self.dist.main, not progress, self.cfg.total_steps)
        self.finished = False
        """True once every stage has run its steps."""
        self._resume_optimizer: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------ state
    def resume_from(self, state: TrainState) -> None:
        """Continue a saved run: raw and EMA weights, step, stage and (in `fit`) the optimizer."""
        if state.step > self.cfg.total_steps:
            warnings.warn(f"the run is at step {state.step}, beyond train.steps {self.cfg.total_steps}",
                          stacklevel=2)
        load_weights(self.model, state.model, "train_state.safetensors (raw weights)")
        load_weights(self.ema.model, state.ema, "train_state.safetensors (EMA weights)")
        self.step, self.stage, self.stage_step = state.step, state.stage, state.stage_step
        self.train_seconds = float(state.extra.get("train_seconds", 0.0))
        self._resume_optimizer = state.optimizer
        if "cpu" in state.rng:
            torch.set_rng_state(state.rng["cpu"])
        if "cuda" in state.rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(state.rng["cuda"], self.device)

    def save(self, optimizer: torch.optim.Optimizer | None) -> None:
        if not self.dist.main:
            return
        state = None
        if optimizer is not None:
            state = TrainState(
                step=self.step, stage=self.stage, stage_step=self.stage_step,
                model={k: v.detach() for k, v in self.model.state_dict().items()},
                ema={k: v.detach() for k, v in self.ema.model.state_dict().items()},
                optimizer=optimizer.state_dict(), rng=rng_state(self.device),
                extra={"train_seconds": self.train_seconds})
        config = dict(self.config)
        config["events"] = {"names": sorted(self.event_means), "trained": self.events_trained}
        stats = {"step": self.step, "train_seconds": round(self.train_seconds, 1),
                 "device": device_name(self.device), "processes": self.dist.world,
                 "samples_seen": self.step * self.cfg.batch_size * self.dist.world,
                 "parameters": sum(p.numel() for p in self.model.parameters()),
                 "finished": self.finished}
        save_run(self.run_dir, ema_model=self.ema.model, config=config, spec=self.spec,
                 start_frames=self.start_frames, start_actions=self.start_actions,
                 event_bank=self.event_means, stats=stats, train_state=state,
                 save_dtype=self.cfg.save_dtype)

    # ------------------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        """Train to `total_steps`, checkpointing as configured; returns the last logged scalars.

        Ctrl+C or SIGTERM stop after the current step and save; `--resume` continues from there.
        """
        cfg = self.cfg
        self.log.open(self.step)
        last: dict[str, float] = {}
        from tqdm import tqdm

        bar = tqdm(total=cfg.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.dist.main), desc="fit")
        optimizer: torch.optim.Optimizer | None = None
        first_step = self.step
        try:
            with StopFlag() as flag:
                for index, (name, steps) in enumerate(cfg.plan):
                    if index < self.stage:
                        continue
                    if index > self.stage:
                        self.stage, self.stage_step = index, 0
                    if self.stage_step >= steps:
                        continue
                    optimizer, last = self._run_stage(name, steps, bar, flag, last)
                    if flag.stop:
                        break
                else:
                    self.finished = True
        finally:
            bar.close()
            if self.step > first_step:  # never write a run (or overwrite one) without progress
                self.save(optimizer)
            self.log.close()
        return last

    def _run_stage(self, name: str | None, steps: int, bar: Any, flag: StopFlag,
                   last: dict[str, float]) -> tuple[torch.optim.Optimizer, dict[str, float]]:
        cfg, device = self.cfg, self.device
        if name is not None:
            set_stage = getattr(self.model, "set_stage", None)
            if set_stage is None:
                raise UserError(f"train.stages is set but the {self.config.get('family')} family has no stages")
            set_stage(name)
            bar.set_description(f"fit [{name}]")
        if cfg.trainable:
            freeze_except(self.model, cfg.trainable)
        optimizer = make_optimizer(self.model, cfg, device)
        saved = self._resume_optimizer
        if saved is not None and self.stage_step > 0:
            try:
                optimizer.load_state_dict(saved)
            except (ValueError, KeyError, RuntimeError) as err:
                raise UserError(f"optimizer state in {self.run_dir} does not fit the model: {err}") from None
        self._resume_optimizer = None
        params = [p for g in optimizer.param_groups for p in g["params"]]
        loss_fn: Any = self.model.loss
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            loss_fn = DDP(LossModule(self.model), device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=True)
        if cfg.compile:
            loss_fn = torch.compile(loss_fn)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")
        stream = self.sampler.stream(self.step, cfg.num_workers, pin=device.type == "cuda")
        # Nothing below reads a GPU value every step: a read waits for the queue to drain, and the
        # host then launches the next step's kernels onto an idle GPU. Values are read every
        # READ_EVERY steps (bar, scalars, the non-finite check) and for the status line. With a
        # fused optimizer (CUDA) a non-finite step is skipped on the device through its
        # `found_inf` (the mechanism torch.amp.GradScaler uses); elsewhere it is read at once.
        on_device = all(group.get("fused") for group in optimizer.param_groups)
        bad_run = torch.zeros((), device=device)  # non-finite steps in a row, on the device
        smooth: torch.Tensor | None = None  # smoothed loss, on the device
        tick = time.perf_counter()
        self.model.train()
        while self.stage_step < steps and not self._should_stop(flag):
            lr = cfg.lr * min(1.0, (self.stage_step + 1) / max(cfg.warmup_steps, 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            waited = time.perf_counter()
            raw = next(stream)
            self.data_seconds += time.perf_counter() - waited  # the step stood idle for its batch
            batch = raw.to_batch(device)
            with autocast:
                loss, logs = loss_fn(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            value = loss.detach().float()
            bad = ~(torch.isfinite(value) & torch.isfinite(gnorm))
            bad_run = (bad_run + 1) * bad
            if not on_device and bool(bad):
                self._check_finite(int(bad_run), cfg)
                continue  # skip this update; the batch stream moves on
            if on_device:
                optimizer.found_inf = bad.float()  # type: ignore[attr-defined]  # fused step: skip if 1
            optimizer.step()
            self.ema.update(self.model, self.step)
            self.step += 1
            self.stage_step += 1
            now = time.perf_counter()
            self.train_seconds += now - tick
            tick = now
            smooth = value if smooth is None else torch.where(bad, smooth, 0.9 * smooth + 0.1 * value)
            bar.update(1)
            self.log.status(self.step, smooth, lr, self.data_seconds)
            if self.step % READ_EVERY == 0 or self.stage_step == steps or flag.stop:
                if on_device:
                    self._check_finite(int(bad_run), cfg)
                bar.set_postfix(loss=f"{float(smooth):.4f}", lr=f"{lr:.1e}")
                last = {"loss": float(value), "lr": lr, "grad_norm": float(gnorm),
                        **{k: float(v) for k, v in logs.items()}}
                self.log.scalars(last, self.step, self.step * cfg.batch_size * self.dist.world
                                 / max(self.train_seconds, 1e-9))
            if cfg.eval_every and self.step % cfg.eval_every == 0:
                last["heldout_loss"] = self._heldout_loss()
                bar.set_postfix(loss=f"{float(smooth):.4f}", heldout=f"{last['heldout_loss']:.4f}", lr=f"{lr:.1e}")
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                self.log.samples(self.ema.model, self.sample_batch, self.device, self.step)
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save(optimizer)
            tick = time.perf_counter()  # evaluation and saving are not training time
        if on_device:
            optimizer.found_inf = None  # type: ignore[attr-defined]  # a saved state holds no flag
        return optimizer, last

    def _check_finite(self, bad_run: int, cfg: TrainConfig) -> None:
        """Give up after 20 non-finite steps in a row (`bad_run`: how many so far)."""
        if bad_run >= 20:
            hint = ("; train.compile with bf16 can give non-finite gradients (seen in max-pool "
                    "backward): try --set train.compile=false" if cfg.compile else
                    "; lower train.lr or check the data")
            raise UserError(f"loss or gradients not finite for {bad_run} steps in a row at step "
                            f"{self.step}{hint}")

    def _should_stop(self, flag: StopFlag) -> bool:
        """Under DDP every rank must stop at the same step, or the others hang in all-reduce."""
        if self.dist.world == 1:
            return flag.stop
        import torch.distributed as tdist

        t = torch.tensor([float(flag.stop)], device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        flag.stop = bool(t.item())
        return flag.stop

    @torch.no_grad()
    def _heldout_loss(self) -> float:
        """Mean loss of the EMA weights on fixed held-out batches, with fixed noise draws."""
        if not self.held_batches:
            return float("nan")
        model = self.ema.model
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            losses = [float(model.loss(b.to_batch(self.device))[0]) for b in self.held_batches]  # type: ignore[operator]
        value = float(np.mean(losses))
        self.log.scalar("heldout/loss", value, self.step)
        return value


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

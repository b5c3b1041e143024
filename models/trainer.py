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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.errors import UserError
from engine.simulator import GameSpec
from models.checkpoint import TrainState, load_weights, save_run
from models.config import ConfigError, from_dict
from models.data import Recordings
from models.neural_sim import tune_cuda_backends
from models.train_log import TrainLog
from models.train_runtime import EMA, LossModule, StopFlag, freeze_except, init_distributed, rng_state
from models.windows import ObjectRegion, RawBatch, WindowSampler, heldout_batches

READ_EVERY = TrainLog.SCALARS_EVERY
"""Steps between reads of the loss and gradient norm from the device (bar, scalars, checks)."""


@dataclass(frozen=True)
class TrainConfig:
    """The `train:` section of a config."""

    steps: int = 1000
    """Optimizer steps in all (with stages: the sum of stage_steps)."""
    batch_size: int = 32
    """Windows per step and per GPU."""
    lr: float = 3e-4
    weight_decay: float = 0.01
    """AdamW decoupled weight decay, applied to matrices and kernels only (not biases, norms)."""
    warmup_steps: int = 200
    """Linear learning-rate warm-up from 0 (restarts with each stage's fresh optimizer)."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    ema_decay: float = 0.999
    """EMA of the weights, saved for play; the decay ramps up as min(decay, (1+t)/(10+t))."""
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    compile: bool = False
    """torch.compile the loss (the saved module stays uncompiled)."""
    eval_every: int = 1000
    """Held-out loss every N steps (0: never)."""
    checkpoint_every: int = 500
    """Atomic checkpoint (playable run + resume state) every N steps (0: only at the end)."""
    sample_every: int = 1000
    """Sample rollouts to TensorBoard every N steps (0: never)."""
    holdout_fraction: float = 0.1
    """Episodes kept out of training for the held-out loss and `train.py eval`."""
    num_workers: int = 2
    """Threads building batches ahead (0: inline)."""
    seed: int = 0
    event_dropout: float = 0.1
    """Probability an example's events are hidden behind one null vector (null-event dropout)."""
    event_change_fraction: float = 0.0
    """Share of each batch drawn from windows where an event starts or ends (windows.WindowSampler)."""
    event_noise: float = 0.0
    """Largest noise-to-signal norm ratio of the Gaussian noise added to each drawn paraphrase
    embedding before renormalising (windows.WindowSampler); 0 = off."""
    event_focus: dict[str, float] = field(default_factory=dict)
    """Event name -> relative weight of its change windows (windows.WindowSampler), e.g.
    {sunset: 4} while a model still draws sunset as night; other events 1."""
    reward_fraction: float = 0.0
    """Share of each batch drawn from windows whose target step scores (windows.WindowSampler)."""
    object_fraction: float = 0.0
    """Share of each batch drawn from clear windows where `object_region`'s small object is in
    play in every frame (windows.WindowSampler), e.g. 1.0 for a stage that teaches a one-step
    sampler Breakout's ball (with model.edm.high_sigma_fraction 1.0; docs/RESULTS.md)."""
    object_region: dict[str, Any] = field(default_factory=dict)
    """Where the object shows (windows.ObjectRegion): {rows: [top, bottom], cols: [left, right]}
    as fractions of the frame, and {channel, above}: some pixel there has that channel > above."""
    stages: tuple[str, ...] = ()
    """Named stages run in order via model.set_stage(name), each with a fresh optimizer."""
    stage_steps: tuple[int, ...] = ()
    """Optimizer steps of each stage."""
    save_dtype: str = "float32"
    """Storage of the playable weights: float32, or bfloat16 to halve shipped files."""
    trainable: tuple[str, ...] = ()
    """Names (or name prefixes) of the parameters to train, e.g. [unet.event_proj] to
    fit only how event vectors enter a model; every other weight stays frozen. Empty: all. For
    small fine-tunes of a shipped model: few weights move, so the rest of what it draws cannot."""
    channels_last: bool = False
    """Train with NHWC conv weights on CUDA (benchmarks/diffusion_train_speed.py --channels-last
    says whether it pays on a card); ignored on the CPU. Saved weights are the same either way."""

    @staticmethod
    def parse(data: dict[str, Any] | None) -> TrainConfig:
        cfg = from_dict(TrainConfig, data, "train.")
        if cfg.stages and len(cfg.stages) != len(cfg.stage_steps):
            raise ConfigError(f"train.stages names {len(cfg.stages)} stages but train.stage_steps "
                              f"gives {len(cfg.stage_steps)} step counts")
        for name in ("steps", "batch_size"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "sample_every", "num_workers",
                     "weight_decay", "grad_clip"):
            if not getattr(cfg, name) >= 0:  # `not >=` also refuses nan
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(cfg, name)}")
        if not 0 < cfg.lr < math.inf:
            raise ConfigError(f"train.lr must be a positive number, got {cfg.lr}")
        if not 0 <= cfg.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1), got {cfg.ema_decay}")
        if not 0 <= cfg.event_dropout <= 1 or not 0 <= cfg.holdout_fraction < 1:
            raise ConfigError("train.event_dropout must be in [0, 1] and train.holdout_fraction in [0, 1)")
        if not all(0 <= f <= 1 for f in (cfg.event_change_fraction, cfg.reward_fraction, cfg.object_fraction)):
            raise ConfigError("train.event_change_fraction, train.reward_fraction and "
                              "train.object_fraction must be in [0, 1]")
        if cfg.object_fraction > 0 and not cfg.object_region:
            raise ConfigError("train.object_fraction needs train.object_region: where the object shows")
        ObjectRegion.parse(cfg.object_region)  # checks the keys and ranges now, not at the first batch
        if not 0 <= cfg.event_noise <= 4:
            raise ConfigError("train.event_noise must be in [0, 4] (a noise-to-signal norm ratio)")
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w <= 100
               for w in cfg.event_focus.values()):
            raise ConfigError("train.event_focus maps event names to weights in [0, 100], e.g. {sunset: 4}")
        return cfg

    @property
    def region(self) -> ObjectRegion | None:
        """`object_region` as windows.ObjectRegion; None when not given."""
        return ObjectRegion.parse(self.object_region) if self.object_region else None

    @property
    def plan(self) -> list[tuple[str | None, int]]:
        """(stage name or None, steps) in order."""
        if self.stages:
            return list(zip(self.stages, self.stage_steps))
        return [(None, self.steps)]

    @property
    def total_steps(self) -> int:
        return sum(n for _, n in self.plan)


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
        self.sampler = WindowSampler(recs, train, window, self.cfg.batch_size, event_bank,
                                     self.cfg.event_dropout, self.cfg.seed, self.dist.rank,
                                     self.cfg.event_change_fraction, self.cfg.event_noise,
                                     self.cfg.event_focus, self.cfg.reward_fraction,
                                     self.cfg.object_fraction, self.cfg.region)
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

"""The `train:` section of a config (`TrainConfig`): optimizer, schedule, which windows each
batch draws (models/windows.py) and which weights train. `parse` checks every value, so that
`train.py fit` refuses a bad setting before any data loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.config import ConfigError, from_dict
from models.object_windows import ObjectRegion


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
    """Where the object shows (object_windows.ObjectRegion): {rows: [top, bottom], cols: [left, right]}
    as fractions of the frame, and {channel, above}: some pixel there has that channel > above."""
    object_crop: int = 0
    """Side (pixels at model resolution, a multiple of 16) of the crops cut around the object in
    `object_crop_fraction` of the batches (windows.WindowSampler); 0 = off."""
    object_crop_fraction: float = 0.0
    """Share of batches made wholly of object windows cut to `object_crop` around the object."""
    object_appear_fraction: float = 0.0
    """Share of each whole-frame batch drawn from clear windows whose target frame alone shows
    the object (windows.WindowSampler): Breakout's serve after FIRE."""
    object_bounce_fraction: float = 0.0
    """Share of each batch, crops too, drawn from clear windows whose target shows the object off
    the straight line through its last two context sightings (object_windows.py): bounces."""
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
        for key in ("event_change_fraction", "reward_fraction", "object_fraction", "object_appear_fraction",
                    "object_bounce_fraction"):
            if not 0 <= getattr(cfg, key) <= 1:
                raise ConfigError(f"train.{key} must be in [0, 1], got {getattr(cfg, key)}")
        for key in ("object_fraction", "object_appear_fraction", "object_bounce_fraction"):
            if getattr(cfg, key) > 0 and not cfg.object_region:
                raise ConfigError(f"train.{key} needs train.object_region: where the object shows")
        ObjectRegion.parse(cfg.object_region)  # checks the keys and ranges now, not at the first batch
        if cfg.object_crop < 0 or cfg.object_crop % 16:
            raise ConfigError("train.object_crop must be 0 (off) or a multiple of 16 (the U-Net presets "
                              f"shrink frames by up to 8 before their middle), got {cfg.object_crop}")
        if not 0 <= cfg.object_crop_fraction <= 1:
            raise ConfigError(f"train.object_crop_fraction must be in [0, 1], got {cfg.object_crop_fraction}")
        if cfg.object_crop_fraction > 0 and not (cfg.object_crop and cfg.object_region):
            raise ConfigError("train.object_crop_fraction needs train.object_crop (the crop side) and "
                              "train.object_region (where the object shows)")
        if not 0 <= cfg.event_noise <= 4:
            raise ConfigError("train.event_noise must be in [0, 4] (a noise-to-signal norm ratio)")
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not 0 <= w <= 100
               for w in cfg.event_focus.values()):
            raise ConfigError("train.event_focus maps event names to weights in [0, 100], e.g. {sunset: 4}")
        return cfg

    @property
    def region(self) -> ObjectRegion | None:
        """`object_region` as object_windows.ObjectRegion; None when not given."""
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

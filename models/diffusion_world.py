"""The diffusion world model: an EDM denoiser of the next frame plus a reward/termination head.

Training (`loss`): given T = context_frames past frames and the actions taken at them, denoise
the next frame (EDM loss), with GameNGen's context-noise augmentation: the past frames get
Gaussian noise of a random level in [0, context_noise_max], and the level's bucket is an input,
so the model learns to repair its own imperfect past during long rollouts. A small CNN predicts
the reward sign and termination from (previous frame, next frame, action).

Play (`start` / `advance`): a rolling window of the last `context_frames` frames and actions;
each step samples the next frame with the current sampler preset. No horizon cap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.simulator import GameSpec
from models.config import ConfigError, from_dict
from models.diffusion.cuda_graph import GraphedFunction
from models.diffusion.edm import Denoiser, EDMConfig, EDMLoss, motion_weights
from models.diffusion.head import HeadConfig, RewardHead
from models.diffusion.sampler import SamplerConfig, initial_noise, karras_sigmas, sample
from models.diffusion.unet import UNet, UNetConfig
from models.world import Batch, Prediction

DEFAULT_SAMPLERS = {
    "fast": SamplerConfig(steps=1, method="euler"),
    "balanced": SamplerConfig(steps=2, method="euler", sigma_min=2.0),
    "quality": SamplerConfig(steps=3, method="euler"),
}
"""Used when a config names no samplers; the shipped yaml presets say why each was chosen."""


@dataclass(frozen=True)
class DiffusionConfig:
    resolution: int = 64
    context_frames: int = 4
    context_noise_max: float = 0.7
    """Largest std of the Gaussian noise put on past frames in training (GameNGen: 0.7)."""
    context_noise_buckets: int = 10
    """Levels 0, max/(n-1), ..., max; the bucket index is embedded (GameNGen: 10 buckets)."""
    play_context_noise: int = 0
    """Bucket of noise put on the (generated) context at play time; 0 = none."""
    sampler: str = "fast"
    """Sampler preset used by default at play time."""
    rollout_steps: int = 0
    """Self-rollout training (scheduled sampling, Bengio et al. 2015): for a share
    `rollout_fraction` of each batch the last `rollout_steps` context frames are the model's own
    predictions (play sampler, no gradient) from the real frames before them. One-step training
    on real context cannot teach what play needs most right after a world event starts: the
    real context barely shows the fading-in event, so the event vector alone must say which
    event it is, and the model must go on from frames it drew itself. 0 = off."""
    rollout_fraction: float = 0.5
    """Share of each batch trained from its own rollouts: round(B * fraction) rows, a fixed count."""
    event_onset: bool = False
    """Also condition on the change of the event vector since the previous step. An event that
    acts once (the rebuilt wall, the extra life) shows only on its onset step; later steps with
    the same vector must leave the world alone. The vector alone cannot say which step is the
    onset, so a model without this learns one answer for both: it rebuilds the wall on every step
    the event is on, or never answers the prompt. The change is nonzero on exactly the onset and end steps."""
    unet: UNetConfig = field(default_factory=UNetConfig)
    edm: EDMConfig = field(default_factory=EDMConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)
    samplers: dict[str, SamplerConfig] = field(default_factory=lambda: dict(DEFAULT_SAMPLERS))

    @staticmethod
    def parse(data: dict[str, Any]) -> DiffusionConfig:
        """Build from the `model:` section of a resolved config, naming any unknown key."""
        data = dict(data)
        data.pop("family", None)
        unet = from_dict(UNetConfig, data.pop("unet", None), "model.unet.")
        edm = from_dict(EDMConfig, data.pop("edm", None), "model.edm.")
        heads = from_dict(HeadConfig, data.pop("heads", None), "model.heads.")
        raw_samplers = data.pop("samplers", None)
        samplers = dict(DEFAULT_SAMPLERS) if raw_samplers is None else {
            str(name): from_dict(SamplerConfig, value, f"model.samplers.{name}.")
            for name, value in raw_samplers.items()}
        cfg = from_dict(DiffusionConfig, data, "model.")
        cfg = DiffusionConfig(**{**cfg.__dict__, "unet": unet, "edm": edm, "heads": heads,
                                 "samplers": samplers})
        if cfg.context_frames < 1 or cfg.resolution < 8:
            raise ConfigError("model.context_frames must be >= 1 and model.resolution >= 8")
        if (not cfg.unet.channels or min(cfg.unet.channels) < 1 or cfg.unet.cond_dim < 1
                or cfg.unet.blocks_per_level < 1 or cfg.unet.patch_size < 1):
            raise ConfigError("model.unet.channels, cond_dim, blocks_per_level and patch_size must be >= 1")
        if cfg.sampler not in samplers:
            raise ConfigError(f"model.sampler '{cfg.sampler}' is not one of: {', '.join(samplers)}")
        if cfg.resolution % (cfg.unet.patch_size * 2 ** (len(cfg.unet.channels) - 1)):
            raise ConfigError("model.resolution must be divisible by patch_size * 2^(levels-1)")
        if not 0 <= cfg.heads.drawn_fraction <= 1:
            raise ConfigError("model.heads.drawn_fraction must be in [0, 1]")
        for key in ("reward_values", "reward_class_weights"):
            if len(getattr(cfg.heads, key)) != 3:
                raise ConfigError(f"model.heads.{key} must list 3 numbers: negative, none, positive")
        if min(cfg.heads.reward_class_weights) < 0:
            raise ConfigError("model.heads.reward_class_weights must not be negative")
        if not 0 <= cfg.play_context_noise < cfg.context_noise_buckets:
            raise ConfigError("model.play_context_noise must be a bucket index")
        if cfg.rollout_steps < 0 or not 0 <= cfg.rollout_fraction <= 1:
            raise ConfigError("model.rollout_steps must be >= 0 and model.rollout_fraction in [0, 1]")
        return cfg


@dataclass
class DiffusionState:
    """Rolling context of a batch of rollouts."""

    frames: torch.Tensor
    """(B, C, 3, H, W) last C frames in [-1, 1], newest last."""
    actions: torch.Tensor
    """(B, C-1) actions taken between them."""
    events: torch.Tensor | None = None
    """(B, EVENT_DIM) event vector of the last step (None: no event was on)."""


class DiffusionWorldModel(nn.Module):
    """WorldModel family "diffusion" (see models/world.py for the contract)."""

    reward_class_weights: torch.Tensor
    """(3,) buffer: cross-entropy weight per reward class (config heads.reward_class_weights)."""
    reward_values: torch.Tensor
    """(3,) buffer: reward paid per predicted class (config heads.reward_values)."""
    trains_on_crops = True
    """The loss takes windows smaller than `resolution` (train.object_crop): the U-Net is
    convolutional, and the heads sit out."""

    def __init__(self, cfg: DiffusionConfig, num_actions: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions = num_actions
        self.context_frames = cfg.context_frames
        self.resolution = cfg.resolution
        self.train_window = cfg.context_frames + cfg.rollout_steps
        self.unet = UNet(cfg.unet, cfg.context_frames, num_actions, cfg.context_noise_buckets,
                         cfg.event_onset)
        self.denoiser = Denoiser(self.unet, cfg.edm)
        self.edm_loss = EDMLoss(cfg.edm)
        self.head = RewardHead(cfg.heads, num_actions)
        # Per-class constants of the head, made once (not per frame); non-persistent: they come
        # from the config, so checkpoints do not carry them.
        self.register_buffer("reward_class_weights", torch.tensor(cfg.heads.reward_class_weights),
                             persistent=False)
        self.register_buffer("reward_values", torch.tensor(cfg.heads.reward_values), persistent=False)
        self.samplers = cfg.samplers
        self.sampler_name = cfg.sampler
        self._graphs: dict[str, GraphedFunction] | None = None
        self._compiled: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None
        self._compiled_presets: frozenset[str] | None = None  # None: every preset

    @classmethod
    def from_config(cls, config: dict[str, Any], spec: GameSpec) -> DiffusionWorldModel:
        return cls(DiffusionConfig.parse(config.get("model") or {}), spec.num_actions)

    # ----------------------------------------------------------------------------- training
    def context_noise_level(self, bucket: torch.Tensor) -> torch.Tensor:
        """Noise std of each bucket index: (B,) long -> (B,) float."""
        n = self.cfg.context_noise_buckets
        return bucket.float() * (self.cfg.context_noise_max / max(n - 1, 1))

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        t = self.context_frames
        if batch.frames.shape[1] < t + 1:
            raise UserError(f"training windows hold {batch.frames.shape[1]} frames; the model "
                            f"needs context_frames + 1 = {t + 1}")
        frames = batch.frames[:, -(t + 1):]  # (B, T+1, 3, H, W)
        context, target = frames[:, :t], frames[:, t]
        real_last = context[:, -1]
        crop = target.shape[-1] != self.resolution  # a train.object_crop batch
        # Crop batches keep their real context: they are there to teach the ball's track, and a
        # model that cannot draw the ball yet would roll it out of the context it learns from.
        if self.cfg.rollout_steps and self.training and not crop:
            context = self._rolled_context(batch, context)
        actions = batch.actions[:, -t:]  # (B, T): action at each context frame
        # (B, EVENT_DIM) active while producing the target, or (B, 2 * EVENT_DIM) with its change.
        events = self.event_input(batch.events[:, -1], batch.events[:, -2] if batch.events.shape[1] > 1 else None)
        b = target.shape[0]

        # Context-noise augmentation (GameNGen section 3.2.1): a bucketed level per sample.
        bucket = torch.randint(0, self.cfg.context_noise_buckets, (b,), device=target.device)
        level = self.context_noise_level(bucket)
        noisy_context = context + level[:, None, None, None, None] * torch.randn_like(context)

        prep = self.unet.prepare(noisy_context, actions, bucket, events)
        weight = None
        edm = self.cfg.edm
        if edm.motion_weight > 0:
            # Moving pixels (B, 1, H, W) over the last three context frames the model is given,
            # or over the last two and the target (biased: see EDMConfig.motion_from_context).
            seen = context[:, -3:] if edm.motion_from_context else frames[:, -3:]
            weight = motion_weights(seen, edm.motion_weight, edm.motion_threshold, edm.motion_reach)
        denoise = self.edm_loss(self.denoiser, target, prep, weight)  # (B,)

        prev, nxt = self._head_pairs(real_last, target, context, actions, batch.events, crop)
        logits = self.head(prev, nxt, actions[:, -1]).float()
        reward_class = (batch.rewards[:, -1].sign() + 1).long()
        reward_ce = F.cross_entropy(logits[:, :3], reward_class, weight=self.reward_class_weights,
                                    reduction="none")
        end_bce = F.binary_cross_entropy_with_logits(logits[:, 3], batch.terminations[:, -1].float(),
                                                     reduction="none")

        valid = batch.valid[:, -1].float()
        denom = valid.sum().clamp(min=1)
        parts = {"denoise": (denoise * valid).sum() / denom,
                 "reward": (reward_ce * valid).sum() / denom,
                 "termination": (end_bce * valid).sum() / denom}
        # Crops (train.object_crop) teach the denoiser alone: rewards and ends are read from whole
        # frames. Weight 0 rather than no term, so every weight still gets a gradient (DDP).
        heads = float(not crop)
        total = (parts["denoise"] + heads * (self.cfg.heads.reward_weight * parts["reward"]
                                             + self.cfg.heads.termination_weight * parts["termination"]))
        # Tensors, not floats: reading them here would stall the GPU queue every step.
        logs = {f"loss/{k}": v.detach() for k, v in parts.items()}
        logs["context_noise"] = level.mean()
        return total, logs

    def event_input(self, events: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The U-Net's event conditioning for a step: `events` (B, EVENT_DIM), or with
        `event_onset` the pair [events, events - previous] (B, 2 * EVENT_DIM); `previous` is the
        vector of the step before (None: no event was on)."""
        if not self.cfg.event_onset:
            return events
        change = events if previous is None else events - previous.to(events.dtype)
        return torch.cat([events, change], dim=1)

    def _head_pairs(self, real_last: torch.Tensor, target: torch.Tensor, context: torch.Tensor,
                    actions: torch.Tensor, events: torch.Tensor, crop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(previous, next) frames (B, 3, H, W) the head learns from: real transitions, except
        the first round(B * heads.drawn_fraction) rows, whose next frame is the model's own draw
        from `context` (B, C, 3, H, W) with the play sampler, after that context's last frame.
        Rows come in random order, so the first ones are a random pick."""
        n = round(target.shape[0] * self.cfg.heads.drawn_fraction)
        if n == 0 or crop or not self.training:
            return real_last, target
        with torch.no_grad():  # the head learns from the draw; the denoiser is not taught through it
            state = self.start(context[:n], actions[:n, :-1], events[:n, -2] if events.shape[1] > 1 else None)
            _, pred = self.advance(state, actions[:n, -1], events[:n, -1])
        return (torch.cat([context[:n, -1].to(real_last.dtype), real_last[n:]]),
                torch.cat([pred.frame.to(target.dtype), target[n:]]))

    @torch.no_grad()
    def _rolled_context(self, batch: Batch, context: torch.Tensor) -> torch.Tensor:
        """`context` (B, C, 3, H, W) with a random `rollout_fraction` of its rows replaced by the
        model's own play-sampler predictions of their last `rollout_steps` frames.

        The window holds C + K + 1 frames (K = rollout_steps): rollouts start from the real
        frames 0..C-1 and draw frames C..C+K-1 with the recorded actions and event vectors, so
        the target (frame C+K) is the same as for the other rows.
        """
        c, k = self.context_frames, self.cfg.rollout_steps
        if batch.frames.shape[1] < c + k + 1:
            raise UserError(f"training windows hold {batch.frames.shape[1]} frames; self-rollout "
                            f"needs context_frames + rollout_steps + 1 = {c + k + 1}")
        # A fixed number of rows, not a coin per row: the rolled sub-batch keeps one shape, so
        # cuDNN builds its convolution plans once. A new batch size every step cost ~5 ms of host
        # time per convolution on an H100 (1.0 s per step at batch 64 instead of ~0.1 s).
        n = round(context.shape[0] * self.cfg.rollout_fraction)
        if n == 0:
            return context
        pick = torch.randperm(context.shape[0], device=context.device)[:n].sort().values  # (n,) rows
        frames = batch.frames[pick][:, -(c + k + 1):]  # (b, C+K+1, 3, H, W)
        actions, events = batch.actions[pick][:, -(c + k):], batch.events[pick][:, -(c + k):]
        # Exactly the play step: frame p is drawn from the C frames before it.
        state = self.start(frames[:, :c], actions[:, : c - 1], events[:, c - 2] if c > 1 else None)
        for p in range(c, c + k):
            state, _ = self.advance(state, actions[:, p - 1], events[:, p - 1])
        out = context.clone()
        out[pick] = state.frames.to(out.dtype)
        return out

    # --------------------------------------------------------------------------------- play
    @property
    def sampler_presets(self) -> tuple[str, ...]:
        return tuple(self.samplers)

    def set_sampler(self, name: str) -> None:
        if name not in self.samplers:
            raise UserError(f"unknown sampler preset '{name}'; choose one of: {', '.join(self.samplers)}")
        self.sampler_name = name

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay each sampler preset's whole step as one CUDA graph (CUDA, fixed batch size)."""
        self._graphs = {} if enabled else None

    def use_compile(self, enabled: bool = True, presets: Iterable[str] | None = None) -> None:
        """Run the play step through torch.compile (fuses norm, modulation and activation kernels).

        The first step of each compiled sampler preset compiles, which takes a minute or two on a
        GPU; `presets` limits compiling to those (the others run eager, so switching to them never
        stalls play). On CUDA the compiled step is then captured as a CUDA graph.
        """
        self._compiled = torch.compile(self.generate, dynamic=False) if enabled else None
        self._compiled_presets = None if presets is None else frozenset(presets)
        self._graphs = {} if self._graphs is not None else None  # recapture with the new step

    @property
    def compiled_presets(self) -> tuple[str, ...]:
        """The sampler presets whose step runs compiled."""
        if self._compiled is None:
            return ()
        return tuple(n for n in self.samplers if self._compiled_presets is None or n in self._compiled_presets)

    def _step_fn(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """The compiled step for a compiled preset, else the eager one (called every play step)."""
        if self._compiled is not None and (self._compiled_presets is None
                                           or self.sampler_name in self._compiled_presets):
            return self._compiled
        return self.generate

    def start(self, frames: torch.Tensor, actions: torch.Tensor,
              events: torch.Tensor | None = None) -> DiffusionState:
        c = self.context_frames
        if frames.ndim != 5 or frames.shape[1] != c or actions.shape[1:] != (c - 1,):
            raise UserError(f"start needs frames (B, {c}, 3, H, W) and actions (B, {c - 1}); got "
                            f"{tuple(frames.shape)} and {tuple(actions.shape)}")
        return DiffusionState(frames=frames.float(), actions=actions.long(),
                              events=None if events is None else events.float())

    def generate(self, context: torch.Tensor, actions: torch.Tensor, events: torch.Tensor,
                 noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step as a pure tensor function (what a CUDA graph captures).

        Args:
            context: (B, C, 3, H, W) past frames; actions: (B, C) long, newest last;
            events: (B, EVENT_DIM), or (B, 2 * EVENT_DIM) with `event_onset` (`event_input`);
            noise: (B, 3, H, W) start of the sampler at sigma_max.
        Returns the next frame (B, 3, H, W) in [-1, 1] and the head's logits (B, 4).
        """
        cfg = self.samplers[self.sampler_name]
        bucket = torch.full((context.shape[0],), self.cfg.play_context_noise, device=context.device,
                            dtype=torch.long)
        prep = self.unet.prepare(context, actions, bucket, events)
        sigmas = karras_sigmas(cfg).tolist()  # floats: nothing to copy inside a CUDA graph
        frame = sample(lambda x, s: self.denoiser(x, s, prep), noise, sigmas, cfg.method).clamp(-1, 1)
        logits = self.head(context[:, -1], frame, actions[:, -1])
        return frame, logits

    def advance(self, state: DiffusionState, action: torch.Tensor, events: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[DiffusionState, Prediction]:
        cfg = self.samplers[self.sampler_name]
        context = state.frames
        b, _, _, h, w = context.shape
        actions = torch.cat([state.actions, action.long().reshape(b, 1)], dim=1)  # (B, C)
        noise = initial_noise((b, 3, h, w), cfg, context.device, generator)
        if self.cfg.play_context_noise:
            level = self.context_noise_level(torch.tensor(self.cfg.play_context_noise))
            context = context + level * torch.randn(context.shape, generator=generator,
                                                    device=context.device)
        step_events = events.float()
        events = self.event_input(step_events, state.events).to(context.dtype)
        if self._graphs is not None and context.is_cuda:
            graph = self._graphs.get(self.sampler_name)
            if graph is None:
                graph = self._graphs[self.sampler_name] = GraphedFunction(self._step_fn())
            frame, logits = graph(context, actions, events, noise)
        else:
            frame, logits = self._step_fn()(context, actions, events, noise)
        logits = logits.float()
        reward = self.reward_values[logits[:, :3].argmax(1)]  # (B,) paid value of the likeliest class
        new_state = DiffusionState(frames=torch.cat([state.frames[:, 1:], frame[:, None].float()], dim=1),
                                   actions=actions[:, 1:], events=step_events)
        return new_state, Prediction(frame=frame.float(), reward=reward,
                                     termination=torch.sigmoid(logits[:, 3]))

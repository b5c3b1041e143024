"""Autoregressive world model: FSQ frame tokenizer + causal transformer with MaskGIT decoding.

Trained in two stages the config names (`train.stages: [tokenizer, dynamics]`): first the
tokenizer as an autoencoder on single frames, then, with the tokenizer frozen, the transformer
on token sequences. Play keeps the transformer's keys and values in a fixed-size ring (see
models/autoregressive/transformer.py) and decodes each new frame's tokens in a few parallel
passes, then the tokenizer's decoder turns them into pixels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import UserError
from engine.simulator import GameSpec
from models.autoregressive.maskgit import SamplerConfig, draw_noise, maskgit_decode
from models.autoregressive.tokenizer import Tokenizer, TokenizerConfig
from models.autoregressive.transformer import DynamicsTransformer, KVCache, TransformerConfig
from models.config import ConfigError, from_dict
from models.world import EVENT_DIM, Batch, Prediction

STAGES = ("tokenizer", "dynamics", "joint")

DEFAULT_SAMPLERS: dict[str, dict[str, Any]] = {
    "fast": {"passes": 2},
    "quality": {"passes": 6},
}
"""MaskGIT presets when the config names none; `model.samplers` in yaml overrides them."""


@dataclass(frozen=True)
class ARConfig:
    resolution: int = 64
    context_frames: int = 4
    """Real frames `start` takes (the HUD's starting context)."""
    train_window: int = 12
    """Steps per training example; longer than `transformer.window` so that training also sees
    clean blocks whose own attention window is full, as in unbounded play."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    sampler: str = "fast"
    """Play-time sampler preset (a key of `samplers`)."""
    samplers: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SAMPLERS))
    """Named MaskGIT settings {name: {passes, temperature, choice_noise}} the HUD cycles through."""
    tokenizer_frames: int = 4
    """Frames per training window the tokenizer stage reconstructs (a random subset)."""
    context_noise: float = 0.05
    """Up to this fraction of the context tokens is replaced by random codes in training, so the
    transformer learns to read its own imperfect generations (cf. GameNGen's context noise)."""
    change_weight: float = 0.0
    """Extra cross-entropy weight on target tokens that differ from the frame before (paddle,
    ball, a starting event); 0 = plain MaskGIT loss. Most of a Breakout frame's 64 tokens repeat
    from step to step, so the plain loss is met by copying the last frame and the action barely
    matters: the token analogue of the diffusion family's `model.edm.motion_weight`."""
    reward_weight: float = 1.0
    reward_class_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Cross-entropy weight of each reward sign (negative, none, positive). Breakout scores on
    ~2% of steps: unweighted, the head never predicts a point."""
    end_weight: float = 1.0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ARConfig:
        section = dict(section or {})
        tok = from_dict(TokenizerConfig, section.pop("tokenizer", None), "model.tokenizer.")
        trf = from_dict(TransformerConfig, section.pop("transformer", None), "model.transformer.")
        samplers = section.pop("samplers", None) or DEFAULT_SAMPLERS
        if not isinstance(samplers, dict) or not samplers:
            raise ConfigError("model.samplers must map preset names to {passes, temperature, choice_noise}")
        parsed = {str(name): from_dict(SamplerConfig, dict(value or {}), f"model.samplers.{name}.")
                  for name, value in samplers.items()}
        return replace(from_dict(cls, section, "model."), tokenizer=tok, transformer=trf, samplers=parsed)


@dataclass
class ARState:
    """A batch of rollouts in play: the KV ring, the newest frame's tokens and its step index."""

    cache: KVCache
    tokens: torch.Tensor
    """(B, N) tokens of the newest frame (its clean block is written on the next advance)."""
    step: torch.Tensor
    """() long: step index of the newest frame."""
    consumed: bool = False


class ARWorldModel(nn.Module):
    """Tokenizer + dynamics transformer implementing `models.world.WorldModel`."""

    reward_class_weights: torch.Tensor
    """(3,) buffer: cross-entropy weight per reward sign (config model.reward_class_weights)."""

    def __init__(self, config: ARConfig, spec: GameSpec, tokenizer_reused: bool = False) -> None:
        super().__init__()
        tc = config.transformer
        if config.context_frames < 1:
            raise ConfigError("model.context_frames must be at least 1")
        if config.context_frames - 1 > tc.window:
            raise ConfigError(f"model.context_frames ({config.context_frames}) must be at most "
                              f"model.transformer.window + 1 ({tc.window + 1})")
        if config.train_window < max(1, config.context_frames - 1):
            raise ConfigError(f"model.train_window ({config.train_window}) must cover the "
                              f"{config.context_frames} context frames")
        weights = tuple(config.reward_class_weights)
        if len(weights) != 3 or min(weights) < 0:
            raise ConfigError("model.reward_class_weights must list 3 numbers >= 0: negative, none, positive")
        if config.sampler not in config.samplers:
            raise ConfigError(f"unknown model.sampler '{config.sampler}'; choose one of "
                              f"{', '.join(config.samplers)}")
        self.config = config
        self.spec = spec
        self.game = spec.name
        self.num_actions = spec.num_actions
        self.resolution = config.resolution
        self.context_frames = config.context_frames
        self.train_window = config.train_window
        self.tokenizer = Tokenizer(config.tokenizer, config.resolution)
        # Made once, non-persistent (from the config, not the checkpoint), as in diffusion_world.
        self.register_buffer("reward_class_weights", torch.tensor(weights, dtype=torch.float32),
                             persistent=False)
        self.transformer = DynamicsTransformer(tc, self.tokenizer.tokens_per_frame,
                                               self.tokenizer.codebook_size, spec.num_actions, EVENT_DIM)
        self.samplers: dict[str, SamplerConfig] = dict(config.samplers)
        self.sampler_name = config.sampler
        self.stage = "joint"
        self.tokenizer_reused = tokenizer_reused
        """The tokenizer came from another run and is never trained here."""
        self._graphs: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], spec: GameSpec) -> ARWorldModel:
        """Build from a resolved config: its `model:` section, and for a new training run an
        optional top-level `tokenizer: RUN` naming a run whose tokenizer is copied and frozen."""
        model = cls(ARConfig.from_section(config.get("model") or {}), spec,
                    tokenizer_reused=config.get("tokenizer") is not None)
        source = config.get("tokenizer")
        if source is None or "format_version" in config:
            return model  # a saved run: its own weights (tokenizer included) are loaded next
        if not isinstance(source, str):
            raise ConfigError("tokenizer= expects the path of a run directory")
        stages = tuple((config.get("train") or {}).get("stages") or ())
        if "tokenizer" in stages:
            steps = list((config.get("train") or {}).get("stage_steps") or ())
            rest = steps[stages.index("tokenizer") + 1:] if steps else ["N"]
            raise ConfigError(f"the tokenizer is reused from {source}, so train.stages cannot include "
                              f"'tokenizer'; add --set train.stages=[dynamics] "
                              f"--set train.stage_steps=[{', '.join(str(x) for x in rest[:1])}]")
        model.tokenizer.load_state_dict(load_tokenizer_weights(
            source, spec.name, model.resolution, model.config.tokenizer))
        return model

    # ---- training ---------------------------------------------------------------------------
    def set_stage(self, name: str) -> None:
        """Select what `loss` trains: 'tokenizer', 'dynamics' or 'joint' (both at once)."""
        if name not in STAGES:
            raise ConfigError(f"unknown training stage '{name}' for the autoregressive family; "
                              f"choose from {', '.join(STAGES)}")
        if name == "tokenizer" and self.tokenizer_reused:
            raise UserError("the tokenizer is reused from another run: drop the 'tokenizer' stage")
        self.stage = name
        self.tokenizer.requires_grad_(name in ("tokenizer", "joint") and not self.tokenizer_reused)
        self.transformer.requires_grad_(name in ("dynamics", "joint"))

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logs: dict[str, float] = {}
        total = batch.frames.new_zeros(())
        if self.stage in ("tokenizer", "joint") and not self.tokenizer_reused:
            tok_loss, tok_logs = self._tokenizer_loss(batch)
            total, logs = total + tok_loss, {**logs, **tok_logs}
        if self.stage in ("dynamics", "joint"):
            dyn_loss, dyn_logs = self._dynamics_loss(batch)
            total, logs = total + dyn_loss, {**logs, **dyn_logs}
        return total, logs

    def _tokenizer_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        b, t1 = batch.frames.shape[:2]
        k = min(self.config.tokenizer_frames, t1 - 1)
        rows = torch.arange(b, device=batch.frames.device)[:, None]
        idx = torch.randint(1, t1, (b, k), device=batch.frames.device)  # (B, k) frames with a predecessor
        use = (batch.valid[rows, idx] & batch.valid[rows, idx - 1]).flatten()
        cur = batch.frames[rows, idx].flatten(0, 1)[use]
        prev = batch.frames[rows, idx - 1].flatten(0, 1)[use]
        if cur.shape[0] == 0:  # a batch of padding only: nothing to reconstruct
            cur, prev = batch.frames[:, -1], batch.frames[:, -2]
        return self.tokenizer.loss(cur, prev)

    def _dynamics_loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        b, t1 = batch.frames.shape[:2]
        t = t1 - 1
        trf = self.transformer
        n, dev = trf.n, batch.frames.device
        with torch.no_grad():
            tokens = self.tokenizer.encode(batch.frames.flatten(0, 1)).view(b, t1, n)
        clean, target = tokens[:, :t].clone(), tokens[:, 1:]
        if self.training and self.config.context_noise > 0:
            rate = torch.rand(b, t, 1, device=dev) * self.config.context_noise
            noisy = torch.rand(b, t, n, device=dev) < rate
            clean = torch.where(noisy, torch.randint_like(clean, trf.codebook_size), clean)
        # MaskGIT training: per block a mask ratio cos(pi/2 * u), u ~ U(0, 1), at least one token.
        ratio = torch.cos(math.pi / 2 * torch.rand(b, t, 1, device=dev))
        count = (ratio * n).ceil().clamp(1, n)
        rank = torch.rand(b, t, n, device=dev).argsort(-1).argsort(-1)
        masked = rank < count
        gen = torch.where(masked, torch.full_like(target, trf.mask_id), target)
        steps = torch.arange(1, t + 1, device=dev)
        logits, act_out = trf(clean, batch.actions, batch.events, batch.valid[:, :t], gen, clean, steps)
        pair = batch.valid[:, :t] & batch.valid[:, 1:]  # (B, T) real transitions
        sel = masked & pair[..., None]
        if sel.any():
            per_token = F.cross_entropy(logits[sel].float(), target[sel], reduction="none")
            # (S,) weights: 1 + w on tokens that change from the (clean) frame before, normalised
            # to mean 1 over the selected tokens so the loss scale does not depend on w.
            changed = (target != tokens[:, :t])[sel].float()
            weight = 1 + self.config.change_weight * changed
            ce = (per_token * weight).sum() / weight.sum()
        else:
            ce = logits.sum() * 0
        reward_out, end_logit = trf.outcome(act_out)
        reward_out, end_logit = reward_out.float(), end_logit.float()
        sign = (batch.rewards.sign().long() + 1)[pair]
        r_ce = (F.cross_entropy(reward_out[..., :3][pair], sign, weight=self.reward_class_weights.float())
                if pair.any() else ce * 0)
        nonzero = pair & (batch.rewards != 0)
        r_mag = (F.mse_loss(reward_out[..., 3][nonzero], batch.rewards[nonzero].abs().log1p())
                 if nonzero.any() else ce * 0)
        end = (F.binary_cross_entropy_with_logits(end_logit[pair], batch.terminations[pair].float())
               if pair.any() else ce * 0)
        loss = ce + self.config.reward_weight * (r_ce + r_mag) + self.config.end_weight * end
        with torch.no_grad():
            acc = (logits[sel].argmax(-1) == target[sel]).float().mean() if sel.any() else ce * 0
        return loss, {"token_ce": float(ce.detach()), "token_acc": float(acc),
                      "reward_loss": float((r_ce + r_mag).detach()), "end_loss": float(end.detach())}

    # ---- play -------------------------------------------------------------------------------
    @property
    def sampler_presets(self) -> tuple[str, ...]:
        return tuple(self.samplers)

    def set_sampler(self, name: str) -> None:
        if name not in self.samplers:
            raise UserError(f"unknown sampler preset '{name}'; choose one of: {', '.join(self.samplers)}")
        self.sampler_name = name

    @torch.no_grad()
    def start(self, frames: torch.Tensor, actions: torch.Tensor,
              events: torch.Tensor | None = None) -> ARState:
        """Tokenize C real frames and write the first C - 1 steps into a fresh KV ring (this
        family reads the event vector of each step as it comes, so `events` is not needed)."""
        r = self.resolution
        if (frames.ndim != 5 or frames.shape[1] < 1 or tuple(frames.shape[2:]) != (3, r, r)
                or tuple(actions.shape) != (frames.shape[0], frames.shape[1] - 1)):
            raise UserError(f"start needs frames (B, C, 3, {r}, {r}) and actions (B, C - 1); got "
                            f"{tuple(frames.shape)} and {tuple(actions.shape)}")
        b, c = frames.shape[:2]
        n = self.transformer.n
        tokens = self.tokenizer.encode(frames.flatten(0, 1).to(self._dtype())).view(b, c, n)
        dev = frames.device
        cache = self.transformer.new_cache(b, dev, self._dtype())
        no_event = torch.zeros(b, EVENT_DIM, device=dev)
        for i in range(c - 1):
            step = torch.tensor(i, device=dev)
            self.transformer.step_cached(cache, step, (tokens[:, i], actions[:, i].long(), no_event), None)
        return ARState(cache, tokens[:, -1], torch.tensor(c - 1, device=dev))

    @torch.no_grad()
    def advance(self, state: ARState, action: torch.Tensor, events: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[ARState, Prediction]:
        """Write the newest frame with `action` into the ring and decode the next frame.

        The ring is updated in place: a state can be advanced once (call `start` again to branch).
        """
        if state.consumed:
            raise RuntimeError("this rollout state was already advanced; the KV ring is updated in "
                               "place, so start a new rollout to branch")
        state.consumed = True
        trf, cache = self.transformer, state.cache
        b = action.shape[0]
        noise = draw_noise(self.samplers[self.sampler_name], b, trf.n, trf.codebook_size, action.device, generator)
        args = (state.tokens, state.step, action.long(), events.to(self._dtype()), *noise, cache.filled,
                *cache.k, *cache.v)
        if self._graphs is not None and action.is_cuda:
            from models.diffusion.cuda_graph import GraphedFunction

            graph = self._graphs.setdefault(self.sampler_name, GraphedFunction(self._generate))
            try:
                out = graph(*args)
            except RuntimeError as err:  # capture refused: the state is untouched (graphs copy inputs)
                warnings.warn(f"CUDA graph capture failed ({str(err).splitlines()[0]}); stepping "
                              "without graphs", stacklevel=2)
                self._graphs = None
                out = self._generate(*args)
        else:
            out = self._generate(*args)
        tokens, frame, reward, end, filled = out[:5]
        layers = len(cache.k)
        ring = KVCache.wrap(list(out[5:5 + layers]), list(out[5 + layers:]), filled)
        return ARState(ring, tokens, state.step + 1), Prediction(frame.float(), reward, end)

    def _generate(self, tokens: torch.Tensor, step: torch.Tensor, action: torch.Tensor, events: torch.Tensor,
                  sample_u: torch.Tensor, choice_u: torch.Tensor, filled: torch.Tensor,
                  *kv: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One whole step as tensor operations only (the unit a CUDA graph replays).

        Returns: new tokens (B, N), frame (B, 3, H, W), reward (B,), P(end) (B,), then the ring.
        """
        trf = self.transformer
        layers = len(kv) // 2
        cache = KVCache.wrap(list(kv[:layers]), list(kv[layers:]), filled)
        clean = (tokens, action, events)
        act_out: list[torch.Tensor] = []

        def predict(gen: torch.Tensor, k: int) -> torch.Tensor:
            logits, out = trf.step_cached(cache, step, clean if k == 0 else None, gen, tokens)
            if out is not None:
                act_out.append(out)
            assert logits is not None
            return logits

        new = maskgit_decode(predict, trf.n, trf.mask_id, self.samplers[self.sampler_name], sample_u, choice_u)
        g = self.tokenizer.grid
        frame = self.tokenizer.decode(new.view(-1, g, g))
        reward, end = self.outcome(act_out[0])
        return (new, frame, reward, end, cache.filled, *cache.k, *cache.v)

    def use_cuda_graphs(self, enabled: bool = True) -> None:
        """Replay each sampler preset's whole step as one CUDA graph (CUDA, fixed batch size): the
        ring and all noise are inputs, so every step has the same shapes and addresses."""
        self._graphs = {} if enabled else None

    def outcome(self, action_hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, d) action-token outputs -> reward (B,) (0 unless a sign is predicted), P(end) (B,)."""
        reward_out, end_logit = self.transformer.outcome(action_hidden)
        reward_out = reward_out.float()
        sign = reward_out[:, :3].argmax(-1).float() - 1
        reward = sign * torch.expm1(reward_out[:, 3].clamp(min=0))
        return reward, torch.sigmoid(end_logit.float())

    def _dtype(self) -> torch.dtype:
        return self.transformer.tok_emb.weight.dtype


def load_tokenizer_weights(run: str, game: str, resolution: int,
                           config: TokenizerConfig) -> dict[str, torch.Tensor]:
    """The tokenizer tensors of run directory `run`, checked to fit this model."""
    import yaml
    from safetensors.torch import load_file

    root = Path(run)
    weights, cfg_path = root / "model.safetensors", root / "config.yaml"
    if not weights.is_file() or not cfg_path.is_file():
        raise UserError(f"tokenizer run {run}: needs model.safetensors and config.yaml")
    try:
        saved = yaml.safe_load(cfg_path.read_text()) or {}
    except yaml.YAMLError:
        raise UserError(f"tokenizer run {run}: config.yaml is not valid yaml") from None
    if saved.get("family") != "autoregressive":
        raise UserError(f"tokenizer run {run} is a {saved.get('family')} model, not autoregressive")
    saved_game = saved.get("game")
    if isinstance(saved_game, dict):  # a saved run stores the whole GameSpec
        saved_game = saved_game.get("name")
    if saved_game != game:
        raise UserError(f"tokenizer run {run} was trained on {saved_game}, not {game}")
    other = ARConfig.from_section(saved.get("model", {}))
    if other.resolution != resolution:
        raise UserError(f"tokenizer run {run} works at {other.resolution}x{other.resolution}, "
                        f"this model at {resolution}x{resolution}")
    if other.tokenizer != config:
        raise UserError(f"tokenizer run {run} has another tokenizer shape ({other.tokenizer}); "
                        "copy its model.tokenizer section into this config")
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises several types for truncated files
        raise UserError(f"tokenizer run {run}: cannot read model.safetensors ({err})") from None
    prefix = "model.tokenizer."  # models/checkpoint.py stores the playable weights as model.<name>
    found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not found:
        raise UserError(f"tokenizer run {run}: model.safetensors holds no tokenizer weights")
    return found

"""A lean U-Net denoiser for small RGB frames, conditioned through adaptive group norm.

Design after DIAMOND (Alonso et al. 2024): the noisy next frame is stacked with the last
`context_frames` frames on the channel axis; one conditioning vector (Fourier embedding of
c_noise + embeddings of the recent actions + the context-noise level + a projection of the event
vector) drives a per-block scale/shift of every GroupNorm. Two changes buy speed on a CPU:

* `patch_size` 2 folds 2x2 pixels into channels (pixel unshuffle) before the first conv, so the
  whole network runs at 32x32 and below; the output is unfolded back (pixel shuffle).
* The context frames are encoded by their own first conv, once per generated frame
  (`prepare`), and reused by every denoising step; only the noisy frame's conv runs per step.
  The sum of the two convs equals one conv over the stacked channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from models.world import EVENT_DIM


@dataclass(frozen=True)
class UNetConfig:
    channels: tuple[int, ...] = (64, 64, 64, 64)
    """Width of each resolution level, highest resolution first; each level after the first
    halves the resolution."""
    blocks_per_level: int = 2
    """Residual blocks per level on the way down (the way up has the same number)."""
    cond_dim: int = 256
    """Width of the conditioning vector that drives every adaptive norm."""
    patch_size: int = 1
    """Pixels folded into channels before the first conv (1: none, 2: run at half resolution)."""
    attention: bool = True
    """Self-attention in the bottleneck (lowest resolution only)."""
    norm_groups: int = 8
    fourier_dim: int = 64
    """Number of random Fourier features of c_noise (half cos, half sin)."""


@dataclass
class Prepared:
    """What a denoising step reuses within one generated frame."""

    context: torch.Tensor
    """(B, C0, h, w) first-conv features of the context frames."""
    cond: torch.Tensor
    """(B, cond_dim) conditioning without the noise level."""


M = TypeVar("M", nn.Linear, nn.Conv2d)


def zero_init(layer: M) -> M:
    """Zero a layer's weights and bias, so that residual branches and modulations start inert."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class AdaGroupNorm(nn.Module):
    """GroupNorm without its own affine, scaled and shifted per sample from the conditioning.

    The scale/shift of every norm in the U-Net come from one linear layer (`UNet.modulation`),
    evaluated once per network call: one matrix product instead of one per norm, which matters
    at batch 1 where each small kernel launch costs more than its arithmetic. This norm reads
    its slice `[offset, offset + 2 * channels)` of that (B, total) modulation vector.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.channels = channels
        self.groups = math.gcd(groups, channels)
        self.offset = -1  # assigned by UNet once every norm exists

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        c, o = self.channels, self.offset
        scale = mod[:, o:o + c, None, None]  # (B, C, 1, 1); the layer's bias starts it at 1
        shift = mod[:, o + c:o + 2 * c, None, None]
        return torch.addcmul(shift, F.group_norm(x, self.groups), scale)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, cfg: UNetConfig, attention: bool = False) -> None:
        super().__init__()
        self.norm1 = AdaGroupNorm(c_in, cfg.norm_groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = AdaGroupNorm(c_out, cfg.norm_groups)
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))  # block starts as identity
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attn = SelfAttention(c_out, cfg.norm_groups) if attention else None

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x, mod)))
        h = self.conv2(F.silu(self.norm2(h, mod)))
        x = self.skip(x) + h
        return self.attn(x) if self.attn is not None else x


class SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of the (small) bottleneck feature map."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, 1, c, h * w).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, 1, hw, C)
        return x + self.out(y.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Predicts the EDM network output F for a noisy frame, given context and conditioning.

    Call `prepare` once per generated frame, then `forward` once per denoising step.
    """

    fourier_freqs: torch.Tensor
    action_offsets: torch.Tensor

    def __init__(self, cfg: UNetConfig, context_frames: int, num_actions: int,
                 context_noise_buckets: int, event_onset: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions = num_actions
        p, c0, d = cfg.patch_size, cfg.channels[0], cfg.cond_dim
        # Conditioning (DIAMOND: actions added to the noise embedding; GameNGen: embedded
        # context-noise buckets). Actions at each of the last `context_frames` positions get
        # their own table, so the sum is a linear map of the concatenated one-hots.
        self.register_buffer("fourier_freqs", torch.randn(cfg.fourier_dim // 2), persistent=True)
        self.noise_mlp = nn.Linear(cfg.fourier_dim, d)
        self.action_emb = nn.Embedding(num_actions * context_frames, d)
        self.register_buffer("action_offsets", torch.arange(context_frames) * num_actions,
                             persistent=False)
        self.ctx_noise_emb = nn.Embedding(context_noise_buckets, d)
        self.event_proj = nn.Linear(EVENT_DIM, d, bias=False)
        # The step's change of the event vector (model.event_onset): nonzero only where an event
        # starts or ends, so "the wall is rebuilt now" is told apart from "it was rebuilt earlier".
        self.onset_proj = nn.Linear(EVENT_DIM, d, bias=False) if event_onset else None
        self.cond_mlp = nn.Sequential(nn.SiLU(), nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))

        self.conv_noisy = nn.Conv2d(3 * p * p, c0, 3, padding=1)
        self.conv_context = nn.Conv2d(3 * context_frames * p * p, c0, 3, padding=1, bias=False)

        levels = len(cfg.channels)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [c0]
        c = c0
        for i, ch in enumerate(cfg.channels):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level):
                blocks.append(ResBlock(c, ch, cfg))
                c = ch
                skip_channels.append(c)
            self.down.append(blocks)
            if i < levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skip_channels.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, cfg, attention=cfg.attention), ResBlock(c, c, cfg)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(cfg.channels))):
            blocks = nn.ModuleList()
            for _ in range(cfg.blocks_per_level + 1):
                blocks.append(ResBlock(c + skip_channels.pop(), ch, cfg))
                c = ch
            self.up.append(blocks)
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.norm_out = AdaGroupNorm(c, cfg.norm_groups)
        self.conv_out = zero_init(nn.Conv2d(c, 3 * p * p, 3, padding=1))

        # One modulation layer for every adaptive norm; zero weights and scale bias 1 make each
        # norm start as a plain GroupNorm (the conditioning is learned from there).
        norms = [m for m in self.modules() if isinstance(m, AdaGroupNorm)]
        total = 0
        for norm in norms:
            norm.offset = total
            total += 2 * norm.channels
        self.modulation = zero_init(nn.Linear(d, total))
        with torch.no_grad():
            for norm in norms:
                self.modulation.bias[norm.offset:norm.offset + norm.channels] = 1.0

    def prepare(self, context: torch.Tensor, actions: torch.Tensor, noise_bucket: torch.Tensor,
                events: torch.Tensor) -> Prepared:
        """Encode what stays fixed while one frame is denoised.

        Args:
            context: (B, C, 3, H, W) past frames in [-1, 1] (possibly noise-augmented).
            actions: (B, C) long, the action taken at each context frame (newest last).
            noise_bucket: (B,) long context-noise level index.
            events: (B, EVENT_DIM) event vector; with `event_onset`, (B, 2 * EVENT_DIM): the
                vector, then its change since the previous step.
        """
        b = context.shape[0]
        ctx = F.pixel_unshuffle(context.flatten(1, 2), self.cfg.patch_size)
        cond = (self.action_emb(actions + self.action_offsets).sum(1)
                + self.ctx_noise_emb(noise_bucket) + self.event_proj(events[:, :EVENT_DIM]))
        if self.onset_proj is not None:
            cond = cond + self.onset_proj(events[:, EVENT_DIM:])
        return Prepared(context=self.conv_context(ctx), cond=cond.reshape(b, -1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, prep: Prepared) -> torch.Tensor:
        """x: (B, 3, H, W) noisy frame already scaled by c_in; c_noise: (B,). Returns (B, 3, H, W)."""
        angles = 2 * math.pi * c_noise[:, None] * self.fourier_freqs[None]  # (B, F/2)
        noise_emb = self.noise_mlp(torch.cat([angles.cos(), angles.sin()], dim=1))
        cond = self.cond_mlp(noise_emb + prep.cond)  # (B, D)
        mod = self.modulation(F.silu(cond))  # (B, total): every norm's scale and shift

        h = self.conv_noisy(F.pixel_unshuffle(x, self.cfg.patch_size)) + prep.context
        skips = [h]
        for i, blocks in enumerate(self.down):
            for block in cast(nn.ModuleList, blocks):
                h = block(h, mod)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        for block in self.mid:
            h = block(h, mod)
        for i, blocks in enumerate(self.up):
            for block in cast(nn.ModuleList, blocks):
                h = block(torch.cat([h, skips.pop()], dim=1), mod)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h, mod)))
        return F.pixel_shuffle(out, self.cfg.patch_size)

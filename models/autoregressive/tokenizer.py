"""Frame tokenizer: a convolutional autoencoder with a finite scalar quantizer (FSQ) in between.

64x64 RGB frames become a small grid of discrete tokens (8x8 with three down-samplings) that the
transformer models; the decoder turns generated tokens back into frames. FSQ (Mentzer et al.
2023, "Finite Scalar Quantization: VQ-VAE Made Simple") rounds each latent channel to a few
fixed levels, so there is no codebook to collapse and no commitment loss: the code of a token is
the mixed-radix number formed by its per-channel levels (levels [8, 5, 5, 5] -> 1000 codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TokenizerConfig:
    channels: tuple[int, ...] = (32, 64, 128)
    """Encoder widths per resolution level; each level halves the frame, so the token grid is
    resolution / 2**len(channels) on a side. The decoder mirrors them."""
    blocks: int = 1
    """Residual blocks per level (encoder and decoder)."""
    levels: tuple[int, ...] = (8, 5, 5, 5)
    """FSQ levels per latent channel; the codebook size is their product."""
    motion_weight: float = 4.0
    """Extra reconstruction weight on pixels that changed since the previous frame: the ball and
    paddle are a few pixels of a mostly static screen and would otherwise be averaged away."""


class FSQ(nn.Module):
    """Finite scalar quantization with a straight-through gradient.

    Each of the D channels is squashed by tanh into (-h, h) with h = (L - 1) / 2 and rounded to
    the nearest of L levels; even L are shifted by half a step so the levels stay symmetric.
    """

    levels: torch.Tensor
    basis: torch.Tensor

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", lv, persistent=False)
        basis = torch.cumprod(torch.tensor((1,) + tuple(levels[:-1])), 0)
        self.register_buffer("basis", basis.long(), persistent=False)
        self.dim = len(levels)
        self.codebook_size = int(math.prod(levels))

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        # z: (..., D). Returns values whose rounding lands on one of L integer levels.
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """(..., D) latents -> (..., D) quantized values in [-1, 1] (straight-through)."""
        bounded = self._bound(z.float())  # float32: bf16 cannot place every level boundary
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / (self.levels // 2)

    def codes(self, q: torch.Tensor) -> torch.Tensor:
        """(..., D) quantized values -> (...) integer codes in [0, codebook_size)."""
        digits = torch.round(q * (self.levels // 2) + self.levels // 2).long()
        return (digits * self.basis).sum(-1)

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        """(...) integer codes -> (..., D) quantized values in [-1, 1]."""
        digits = (codes.unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits - self.levels // 2) / (self.levels // 2)


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, ch // 4), ch)
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(8, ch // 4), ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Tokenizer(nn.Module):
    """Frames (B, 3, H, W) in [-1, 1] <-> token grids (B, h, w) of codes in [0, codebook_size)."""

    def __init__(self, config: TokenizerConfig, resolution: int = 64) -> None:
        super().__init__()
        self.config = config
        self.resolution = resolution
        factor = 2 ** len(config.channels)
        if resolution % factor:
            from engine.errors import UserError
            raise UserError(f"tokenizer: resolution {resolution} is not divisible by {factor} "
                            f"({len(config.channels)} down-samplings)")
        self.grid = resolution // factor
        self.fsq = FSQ(config.levels)
        ch = config.channels
        enc: list[nn.Module] = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            enc += [ResBlock(c) for _ in range(config.blocks)]
            nxt = ch[i + 1] if i + 1 < len(ch) else ch[-1]
            enc.append(nn.Conv2d(c, nxt, 4, stride=2, padding=1))  # halve H, W
        enc += [ResBlock(ch[-1]), nn.GroupNorm(min(8, ch[-1] // 4), ch[-1]), nn.SiLU(),
                nn.Conv2d(ch[-1], self.fsq.dim, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(self.fsq.dim, ch[-1], 3, padding=1), ResBlock(ch[-1])]
        for i in reversed(range(len(ch))):
            prev = ch[i + 1] if i + 1 < len(ch) else ch[-1]
            # Nearest up-sampling then a 3x3 conv: no checkerboard artefacts of transposed convs.
            dec += [nn.Upsample(scale_factor=2.0, mode="nearest"), nn.Conv2d(prev, ch[i], 3, padding=1)]
            dec += [ResBlock(ch[i]) for _ in range(config.blocks)]
        dec += [nn.GroupNorm(min(8, ch[0] // 4), ch[0]), nn.SiLU(), nn.Conv2d(ch[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        # A learned backdrop added to every decoded frame: the fixed screen of an Atari game
        # (walls, bricks, HUD) is learned in a few hundred steps as one image, and the network
        # spends its capacity on what differs from it.
        self.backdrop = nn.Parameter(torch.zeros(1, 3, resolution, resolution))

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, grid, grid) long codes."""
        z = self.encoder(frames).permute(0, 2, 3, 1)  # (B, h, w, D)
        return self.fsq.codes(self.fsq.quantize(z))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, grid, grid) long codes -> (B, 3, H, W) frames in [-1, 1]."""
        q = self.fsq.values(codes).permute(0, 3, 1, 2).to(self.backdrop.dtype)
        return (self.decoder(q) + self.backdrop).clamp(-1, 1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Differentiable round trip (B, 3, H, W) -> (B, 3, H, W) (unclamped, for the loss)."""
        z = self.encoder(frames).permute(0, 2, 3, 1)
        q = self.fsq.quantize(z).permute(0, 3, 1, 2)
        return self.decoder(q) + self.backdrop

    def loss(self, frames: torch.Tensor, previous: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 + L2 reconstruction loss, up-weighted where the frame moved.

        Args:
            frames: (B, 3, H, W) targets in [-1, 1].
            previous: (B, 3, H, W) the frames one step earlier, for the motion weight, or None.
        """
        recon = self(frames)
        err = (recon - frames).abs() + (recon - frames).pow(2)
        if previous is not None and self.config.motion_weight > 0:
            moved = (frames - previous).abs().amax(1, keepdim=True).gt(0.05).float()
            weight = 1 + self.config.motion_weight * moved
            loss = (err * weight).sum() / (weight.sum() * 3)
        else:
            loss = err.mean()
        with torch.no_grad():
            mse = F.mse_loss(recon.clamp(-1, 1), frames)
            psnr = 10 * torch.log10(4 / mse.clamp_min(1e-10))
        return loss, {"tokenizer_loss": float(loss.detach()), "tokenizer_psnr": float(psnr)}

"""EDM preconditioning and training loss (Karras et al. 2022, "Elucidating the Design Space").

`Denoiser` turns the raw network F into the denoiser D(x; sigma) = c_skip x + c_out F(c_in x,
c_noise) (EDM Table 1); the sampler only ever calls `Denoiser.forward(x, sigma, prep)`.
`EDMLoss` draws sigma from a log-normal and regresses F on its effective target, which equals
EDM's weighted loss lambda(sigma) ||D(x + n) - x||^2 with lambda = 1 / c_out^2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.diffusion.unet import Prepared, UNet


@dataclass(frozen=True)
class EDMConfig:
    sigma_data: float = 0.5
    """Standard deviation of the data (frames in [-1, 1])."""
    p_mean: float = -0.4
    """Mean of ln(sigma) during training."""
    p_std: float = 1.2
    """Standard deviation of ln(sigma) during training."""
    offset_noise: float = 0.3
    """Scale of per-channel constant noise added to the training noise (DIAMOND uses 0.3); it
    lets the model change a frame's overall brightness (e.g. a "night" event)."""
    motion_weight: float = 0.0
    """Extra loss weight on pixels that move (see `motion_weights`); 0 = plain EDM loss. In
    Atari frames the paddle and ball are ~0.2% of the pixels, so an unweighted loss barely
    notices whether the model follows the keys."""
    motion_threshold: float = 0.1
    """A pixel moves when any channel changes by more than this (frames in [-1, 1])."""
    motion_from_context: bool = False
    """Find the moving pixels in the context frames alone, not in the target too. A weight that
    depends on the target biases the denoiser: where it is unsure whether the ball arrives, the
    weighted mean E[w x] / E[w] favours the ball, so it paints half-bright balls over every place
    the ball might be (docs/RESULTS.md, section "Closed-loop play"). Weights that depend only on
    what the model is given keep the optimum at the conditional mean."""
    motion_reach: int = 1
    """Pixels the moving region is widened by; with `motion_from_context` it must cover where an
    object can go next (Breakout's ball: up to 3 pixels a step at 64x64)."""
    high_sigma_fraction: float = 0.0
    """Share of each batch trained at `high_sigma` instead of the log-normal draw. At the
    log-normal's usual levels (median 0.67) a small object still shows through the noise, so
    the network can copy it from the noisy target; only near a one-step sampler's sigma_max
    must it predict the object from the context. With p_mean -0.4 and p_std 1.2, 11% of draws
    land above sigma 3 and 5% above 5: too small a share of each update to teach Breakout's
    one-pixel ball (docs/RESULTS.md)."""
    high_sigma: float = 5.0
    """The level those samples are trained at: the `fast` sampler's sigma_max."""

    def __post_init__(self) -> None:
        from models.config import ConfigError

        if not 0.0 <= self.high_sigma_fraction <= 1.0:
            raise ConfigError(f"model.edm.high_sigma_fraction must be in [0, 1], got {self.high_sigma_fraction}")
        if self.high_sigma <= 0:
            raise ConfigError(f"model.edm.high_sigma must be > 0, got {self.high_sigma}")
        if self.motion_reach < 0:
            raise ConfigError(f"model.edm.motion_reach must be >= 0, got {self.motion_reach}")


def motion_weights(frames: torch.Tensor, weight: float, threshold: float, reach: int = 1) -> torch.Tensor:
    """Per-pixel loss weights that single out what moves, normalised to mean 1 per sample.

    A pixel counts as moving when it changed between any two consecutive frames of `frames`
    (B, K, 3, H, W: the last context frames, and the target unless the caller leaves it out),
    dilated by `reach` pixels so the neighbourhood an object could move into counts too.
    Weight 1 + `weight` there, 1 elsewhere. Returns (B, 1, H, W).
    """
    change = (frames[:, 1:] - frames[:, :-1]).abs().amax(dim=2)  # (B, K-1, H, W)
    moving = (change > threshold).float().amax(dim=1, keepdim=True)  # (B, 1, H, W)
    moving = torch.nn.functional.max_pool2d(moving, 2 * reach + 1, stride=1, padding=reach)
    w = 1 + weight * moving
    return w / w.mean(dim=(2, 3), keepdim=True)


class Denoiser(nn.Module):
    """D(x; sigma): the preconditioned network; returns the denoised frame estimate."""

    def __init__(self, net: UNet, cfg: EDMConfig) -> None:
        super().__init__()
        self.net = net
        self.cfg = cfg

    def scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """EDM Table 1: c_skip, c_out, c_in, c_noise for sigma (B,); the first three as (B,1,1,1)."""
        sd = self.cfg.sigma_data
        s = sigma[:, None, None, None]
        total = s**2 + sd**2
        c_skip = sd**2 / total
        c_out = s * sd / total.sqrt()
        c_in = 1 / total.sqrt()
        c_noise = sigma.log() / 4
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, prep: Prepared) -> torch.Tensor:
        """x: (B, 3, H, W) noisy frame at noise level sigma (B,). Returns D(x; sigma)."""
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        return c_skip * x + c_out * self.net(c_in * x, c_noise, prep)


class EDMLoss:
    """Denoising loss at log-normally drawn noise levels (EDM Section 5, Table 1)."""

    def __init__(self, cfg: EDMConfig) -> None:
        self.cfg = cfg

    def __call__(self, denoiser: Denoiser, clean: torch.Tensor, prep: Prepared,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
        """clean: (B, 3, H, W) target frames; weight: optional (B, 1, H, W) per-pixel weights.
        Returns the per-sample loss (B,)."""
        b = clean.shape[0]
        sigma = (self.cfg.p_mean + self.cfg.p_std * torch.randn(b, device=clean.device)).exp()
        if self.cfg.high_sigma_fraction > 0:
            high = torch.rand(b, device=clean.device) < self.cfg.high_sigma_fraction
            sigma = torch.where(high, torch.full_like(sigma, self.cfg.high_sigma), sigma)
        noise = torch.randn_like(clean)
        if self.cfg.offset_noise > 0:
            noise = noise + self.cfg.offset_noise * torch.randn(b, clean.shape[1], 1, 1,
                                                                device=clean.device)
        noisy = clean + sigma[:, None, None, None] * noise
        c_skip, c_out, c_in, c_noise = denoiser.scalings(sigma)
        out = denoiser.net(c_in * noisy, c_noise, prep)
        # F's target, so that c_skip x + c_out F = clean; MSE on it is lambda-weighted MSE on D.
        target = (clean - c_skip * noisy) / c_out
        err = (out.float() - target).pow(2)  # (B, 3, H, W)
        if weight is not None:
            err = err * weight
        return err.flatten(1).mean(1)

"""Deterministic ODE samplers over a Karras noise schedule (EDM, Karras et al. 2022, Alg. 1).

The sampler knows nothing about networks: it calls `denoise(x, sigma) -> D(x; sigma)` on a
(B, 3, H, W) tensor. With one Euler step from sigma_max the result is D(noise; sigma_max), a
single denoiser call; DIAMOND plays with 3 Euler steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplerConfig:
    steps: int = 3
    """Number of noise levels visited (network calls: steps for Euler, 2*steps-1 for Heun)."""
    method: Literal["euler", "heun"] = "euler"
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    """Schedule curvature: larger spends more steps at low noise (EDM eq. 5)."""

    def __post_init__(self) -> None:
        from models.config import ConfigError

        if self.steps < 1:
            raise ConfigError(f"sampler steps must be >= 1, got {self.steps}")
        if self.method not in ("euler", "heun"):
            raise ConfigError(f"sampler method must be 'euler' or 'heun', got '{self.method}'")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError("sampler needs 0 < sigma_min < sigma_max")

    @property
    def network_calls(self) -> int:
        return self.steps if self.method == "euler" else 2 * self.steps - 1


def karras_sigmas(cfg: SamplerConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """EDM eq. 5: `steps` levels from sigma_max down to sigma_min, then a final 0. Shape (steps+1,)."""
    if cfg.steps == 1:
        levels = torch.tensor([cfg.sigma_max], dtype=torch.float64)
    else:
        ramp = torch.linspace(0, 1, cfg.steps, dtype=torch.float64)
        lo, hi = cfg.sigma_min ** (1 / cfg.rho), cfg.sigma_max ** (1 / cfg.rho)
        levels = (hi + ramp * (lo - hi)) ** cfg.rho
    return torch.cat([levels, levels.new_zeros(1)]).float().to(device)


def initial_noise(shape: tuple[int, ...], cfg: SamplerConfig, device: torch.device | str,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Starting point x ~ N(0, sigma_max^2); reproducible for a seeded generator."""
    return torch.randn(shape, generator=generator, device=device) * cfg.sigma_max


def sample(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor | Sequence[float],
           method: str = "euler") -> torch.Tensor:
    """Integrate the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma along `sigmas`.

    Args:
        denoise: D(x, sigma) with sigma of shape (B,).
        x: (B, ...) start, already scaled to sigmas[0].
        sigmas: (N+1,) decreasing levels ending in 0 (used as Python floats, so the loop holds
            no host-to-device copies and can be captured in a CUDA graph).
        method: "euler", or "heun" (second-order correction on every step but the last, EDM Alg. 1).
    """
    levels = [float(s) for s in sigmas]
    ones = x.new_ones(x.shape[0])
    for i in range(len(levels) - 1):
        s, s_next = levels[i], levels[i + 1]
        denoised = denoise(x, s * ones)
        slope = (x - denoised) / s
        x_next = x + (s_next - s) * slope
        if method == "heun" and i < len(levels) - 2:
            slope_next = (x_next - denoise(x_next, s_next * ones)) / s_next
            x_next = x + (s_next - s) * (slope + slope_next) / 2
        x = x_next
    return x

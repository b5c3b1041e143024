"""MaskGIT parallel decoding of one frame's tokens in a few passes (Chang et al. 2022, Sec. 3.2).

Every pass predicts all still-masked tokens at once; the most confident samples are kept and the
rest masked again, following the cosine schedule: after pass k of K, N * cos(pi/2 * k / K) tokens
remain masked, so the last pass fills everything. The network is reached through one callable,
`predict(tokens, k) -> logits`, so the same sampler serves the cached play path and the uncached
reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplerConfig:
    passes: int = 2
    """Network passes per frame (1 = take every token from a single prediction)."""
    temperature: float = 1.0
    """Softmax temperature of token sampling; 0 takes the most likely token."""
    choice_noise: float = 1.0
    """Gumbel noise on the confidence that picks which tokens to keep, annealed to 0 (MaskGIT's
    'choice temperature'): keeps early passes from locking in only the easy tokens."""


def draw_noise(config: SamplerConfig, batch: int, n: int, vocab: int, device: torch.device,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All the uniform noise one frame's decoding uses, drawn up front so that decoding itself is
    a fixed sequence of tensor operations (capturable in a CUDA graph).

    Returns: token-sampling noise (K, B, n, V) and keep-choice noise (K, B, n), K = passes.
    """
    k = max(1, config.passes)
    vocab = vocab if config.temperature > 0 else 1
    return (torch.rand((k, batch, n, vocab), device=device, generator=generator),
            torch.rand((k, batch, n), device=device, generator=generator))


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))


def maskgit_decode(predict: Callable[[torch.Tensor, int], torch.Tensor], n: int, mask_id: int,
                   config: SamplerConfig, sample_u: torch.Tensor, choice_u: torch.Tensor) -> torch.Tensor:
    """Decode (B, n) token ids starting from all MASK.

    Args:
        predict: (tokens (B, n) with mask_id where unknown, pass index) -> logits (B, n, V).
        config: passes, temperature and choice noise.
        sample_u, choice_u: uniform noise from `draw_noise`.
    """
    batch = choice_u.shape[1]
    tokens = torch.full((batch, n), mask_id, dtype=torch.long, device=choice_u.device)
    passes = max(1, config.passes)
    for k in range(passes):
        logits = predict(tokens, k).float()
        unknown = tokens == mask_id
        if config.temperature > 0:
            logits = logits / config.temperature
            sampled = (logits + _gumbel(sample_u[k])).argmax(-1)  # Gumbel-max: a softmax sample
        else:
            sampled = logits.argmax(-1)
        sampled = torch.where(unknown, sampled, tokens)
        remaining = math.floor(n * math.cos(math.pi / 2 * (k + 1) / passes))
        if k == passes - 1 or remaining <= 0:
            return sampled
        logp = torch.log_softmax(logits, -1).gather(-1, sampled[..., None])[..., 0]  # (B, n)
        noise = config.choice_noise * (1 - (k + 1) / passes) * _gumbel(choice_u[k])
        confidence = torch.where(unknown, logp + noise, torch.full_like(logp, math.inf))
        keep = confidence.topk(n - remaining, -1).indices
        tokens = torch.full_like(tokens, mask_id).scatter(1, keep, sampled.gather(1, keep))
    return tokens

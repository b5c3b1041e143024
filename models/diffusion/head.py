"""The diffusion world model's reward/termination head and its config.

A small CNN reads a transition (previous frame, next frame, action) and predicts the sign of the
step's reward and whether the episode ends. It sits apart from the denoiser: in training it sees
real transitions (or, with `drawn_fraction`, the model's own draws); in play the frames the
model drew.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HeadConfig:
    channels: int = 32
    """Width of the first conv of the reward/termination CNN (doubles once)."""
    reward_weight: float = 0.5
    termination_weight: float = 0.5
    reward_class_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    """Cross-entropy weight of each reward class (negative, none, positive). Breakout scores on
    ~2% of steps: unweighted, the head learns to never predict a point."""
    reward_values: tuple[float, ...] = (-1.0, 0.0, 1.0)
    """Reward the game pays for each predicted class (negative, none, positive): the head
    predicts the sign, the HUD adds this value. CarRacing pays -0.2 a step and ~+3.3 a tile."""
    drawn_fraction: float = 0.0
    """Share of each batch whose head reads the model's own play-sampler draw of the target
    (from the context it is given, self-rolled rows included) instead of the real next frame,
    with the real label. In play the head only ever sees drawn frames; a one-step sampler unsure
    on which step the ball reaches a brick draws the brick fading over 2-4 steps, which a head
    that learned crisp real breaks never scores. 0 = real transitions only."""


class RewardHead(nn.Module):
    """Reward sign (-1/0/+1 as 3 classes) and termination logit from a transition, ~20 M MACs."""

    def __init__(self, cfg: HeadConfig, num_actions: int) -> None:
        super().__init__()
        c = cfg.channels
        # Input: previous frame, next frame and their difference (what changed is the event).
        self.convs = nn.Sequential(
            nn.Conv2d(9, c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.SiLU())
        self.action_emb = nn.Embedding(num_actions, 4 * c)
        self.mlp = nn.Sequential(nn.Linear(4 * c, 4 * c), nn.SiLU(), nn.Linear(4 * c, 4))

    def forward(self, prev: torch.Tensor, nxt: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """prev, nxt: (B, 3, H, W); action: (B,). Returns (B, 4): 3 reward-sign logits, 1 end logit."""
        h = self.convs(torch.cat([prev, nxt, nxt - prev], dim=1))
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)  # (B, 4c)
        return self.mlp(pooled + self.action_emb(action))

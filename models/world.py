"""The contract between world-model families and everything written once around them.

A family (diffusion, autoregressive) is an `nn.Module` that implements `WorldModel`: the trainer
calls `loss`, the evaluator and `NeuralSimulator` call `start` / `advance`. Tensors use frames in
[-1, 1], channels first, at the model's resolution (64x64 by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

EVENT_DIM = 384
"""Width of an event vector: the sentence encoder's embedding size (all-MiniLM-L6-v2)."""

HIDDEN_EVENT = (np.where(np.arange(EVENT_DIM) % 2 == 0, 1.0, -1.0) / np.sqrt(EVENT_DIM)).astype(np.float32)
"""(EVENT_DIM,) unit vector that null-event dropout puts in place of the events it hides.

Zeros mean "no event is on", and play feeds zeros whenever the console is quiet. Were dropout
to use zeros too, a steady night would be taught as "zeros + a dark context -> dark": the one
vector play relies on for a clear world would also stand for "keep whatever look is showing".
Its own vector keeps "some event, unnamed" apart from "none". Alternating signs put it near no
prompt: |cosine| <= 0.16 against every paraphrase in assets/events.yaml."""


@dataclass
class Batch:
    """A batch of training windows cut from recordings.

    Step t goes from frames[:, t] with actions[:, t] to frames[:, t + 1].
    """

    frames: torch.Tensor
    """(B, T+1, 3, H, W) float in [-1, 1]."""
    actions: torch.Tensor
    """(B, T) long."""
    rewards: torch.Tensor
    """(B, T) float: reward received on step t."""
    terminations: torch.Tensor
    """(B, T) float 0/1: the episode ended on step t."""
    events: torch.Tensor
    """(B, T, EVENT_DIM) float: event vector active during step t (sum of the unit prompt
    embeddings of the active events; zeros when none; `HIDDEN_EVENT` where dropout hid them)."""
    valid: torch.Tensor
    """(B, T+1) bool: False for padding frames before an episode's first frame."""

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in (
            self.frames, self.actions, self.rewards, self.terminations, self.events, self.valid)))


@dataclass
class Prediction:
    """One generated step for a batch of rollouts."""

    frame: torch.Tensor
    """(B, 3, H, W) in [-1, 1]."""
    reward: torch.Tensor
    """(B,) float predicted reward."""
    termination: torch.Tensor
    """(B,) float probability the episode ended."""


class WorldModel(Protocol):
    """What a world-model family implements (as an nn.Module)."""

    context_frames: int
    """How many past frames the model conditions on."""
    num_actions: int
    """Size of the game's action set (actions are 0 .. num_actions - 1)."""
    resolution: int
    """Square frame size the model works at."""
    train_window: int
    """T: steps per training example (Batch.frames has T+1 frames)."""

    def loss(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """Training loss (scalar) and named scalars for logging: floats or 0-d tensors (the
        trainer reads tensors only when it logs, so the GPU is not waited for every step)."""
        ...

    def start(self, frames: torch.Tensor, actions: torch.Tensor,
              events: torch.Tensor | None = None) -> Any:
        """Begin rollouts from real context.

        Args:
            frames: (B, C, 3, H, W) the last C = context_frames real frames.
            actions: (B, C - 1) the actions between them.
            events: (B, EVENT_DIM) the event vector of the last context step, for models that
                see when an event starts (None: no event was on).
        Returns an opaque rollout state.
        """
        ...

    def advance(self, state: Any, action: torch.Tensor, events: torch.Tensor,
                generator: torch.Generator | None = None) -> tuple[Any, Prediction]:
        """Generate the next step for every rollout.

        Args:
            state: from `start` or a previous `advance`.
            action: (B,) long, the action taken at the newest frame.
            events: (B, EVENT_DIM) event vector for this step.
        """
        ...

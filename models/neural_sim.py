"""Any trained world model as a `Simulator`: the play loop, console and eval use it like a real game.

`NeuralSimulator` runs one rollout (batch 1): `reset` picks one of the real start contexts stored
in the checkpoint, `step` turns the action and the active world events into tensors, calls the
model's `advance` and returns a `Step` with the generated frame, the predicted reward and
termination, and the model time in `info["ms"]`. Written against `WorldModel` only, so the
diffusion and autoregressive families share it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import UserError
from engine.simulator import GameSpec, Step, WorldEvent
from models.world import EVENT_DIM

DEFAULT_PRESET = "default"
"""Sampler name reported for a model without sampler presets."""


def resolve_device(name: str | None = "auto", quiet: bool = False) -> torch.device:
    """`auto` -> cuda when a GPU is usable, else cpu with a warning; an explicit device must exist."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if not quiet:
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU found"
            print(f"warning: {why}; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "without" if torch.version.cuda is None else "with"
            raise UserError(f"--device {name}: no CUDA GPU is available (torch {torch.__version__} "
                            f"built {build} CUDA); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"unsupported device '{name}'; use auto, cpu or cuda[:N]")
    return device


def tune_cuda_backends() -> None:
    """Process-wide CUDA settings for fixed-shape convolution work (play steps, training steps):
    cuDNN times its kernels once per input shape and keeps the fastest, and fp32 matmuls and
    convolutions may use TF32. Changes results by float rounding only."""
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


class NeuralSimulator:
    """A world model behind the `Simulator` protocol, batch 1.

    Args:
        model: a `WorldModel` (nn.Module) in eval mode on `device`.
        spec: the game it was trained on.
        start_frames: (K, C, 3, H, W) uint8 real start contexts; start_actions: (K, C-1) long.
        event_bank: event name -> (384,) embedding for the events the model was trained with.
        model_name: shown in the HUD.
        sampler: sampler preset to start with.
        compile: run the model's step through torch.compile where the model offers it (slow
            first step per preset; on CUDA the compiled step is then captured as a CUDA graph).
    """

    def __init__(self, model: Any, spec: GameSpec, start_frames: torch.Tensor,
                 start_actions: torch.Tensor, event_bank: dict[str, Any], device: torch.device,
                 model_name: str = "world model", sampler: str | None = None,
                 compile: bool = False) -> None:
        if start_frames.ndim != 5 or start_frames.shape[0] == 0:
            raise UserError("the checkpoint holds no start contexts to play from")
        self.model = model
        self.spec = spec
        self.device = device
        self.model_name = model_name
        self.start_frames = start_frames.to(torch.uint8)
        self.start_actions = start_actions.long()
        self.event_bank = {name: torch.as_tensor(np.asarray(vec, dtype=np.float32)).to(device)
                           for name, vec in event_bank.items()}
        self.event_names = tuple(self.event_bank)
        """Events the model was trained with; others passed to `step` are ignored."""
        self.events_supported = bool(self.event_bank)
        self._generator = torch.Generator(device=device)
        self._state: Any = None
        self._rng = np.random.default_rng()
        if sampler is not None:
            self.set_sampler(sampler)
        self._optimize(compile)

    def _optimize(self, compile: bool) -> None:
        """Device-specific speed-ups that do not change results beyond float rounding."""
        if self.device.type == "cuda":
            tune_cuda_backends()  # static shapes: the fastest conv kernels are picked once
            if hasattr(self.model, "use_cuda_graphs"):
                self.model.use_cuda_graphs(True)  # whole step as one graph per sampler preset
        elif self.device.type == "cpu":
            # NHWC convolutions are ~15% faster with oneDNN at batch 1 (benchmarks/diffusion_speed.py).
            self.model.to(memory_format=torch.channels_last)
        if compile:
            self.use_compile()

    def use_compile(self, presets: Sequence[str] | None = None) -> None:
        """torch.compile the model's step for `presets` (default: every preset, each compiling on
        its first step; play passes only its starting preset so a switch never stalls on one)."""
        if not hasattr(self.model, "use_compile"):
            raise UserError("this world model has no compiled step; play it without --compile")
        self.model.use_compile(True, presets=presets)

    def warm_up(self) -> float:
        """Run two throwaway steps so compiling and CUDA-graph capture happen now, not in play.

        Returns the seconds it took. The next `reset` starts play afresh, from the start contexts
        it would have picked without this step.
        """
        t0 = time.perf_counter()
        rng = self._rng
        self.reset(seed=0)
        for _ in range(2):  # the first step and the steady state after it
            self.step(0)
        self._state, self._rng = None, rng
        return time.perf_counter() - t0

    # ------------------------------------------------------------------------------ samplers
    @property
    def sampler_presets(self) -> tuple[str, ...]:
        return tuple(getattr(self.model, "sampler_presets", ()) or (DEFAULT_PRESET,))

    @property
    def sampler(self) -> str:
        return str(getattr(self.model, "sampler_name", DEFAULT_PRESET))

    def set_sampler(self, name: str) -> None:
        if hasattr(self.model, "set_sampler"):
            self.model.set_sampler(name)
        elif name != DEFAULT_PRESET:
            raise UserError(f"this model has no sampler presets (asked for '{name}')")

    # ------------------------------------------------------------------------------ playing
    def event_vector(self, events: Sequence[WorldEvent]) -> torch.Tensor:
        """(1, EVENT_DIM): sum of the unit prompt embeddings of the events the model knows."""
        vec = torch.zeros(1, EVENT_DIM, device=self.device)
        for event in events:
            if event.name not in self.event_bank:
                continue  # never trained with it: the model cannot render it
            if event.embedding is not None:
                emb = torch.as_tensor(np.asarray(event.embedding, dtype=np.float32), device=self.device)
                vec[0] += emb / emb.norm().clamp(min=1e-8)
            else:
                vec[0] += self.event_bank[event.name]
        return vec

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        k = int(self._rng.integers(self.start_frames.shape[0]))
        self._generator.manual_seed(int(self._rng.integers(2**62)))
        # Made inside inference mode like every later context, so a compiled step sees one kind
        # of tensor from the first step on (an ordinary one would compile a second graph).
        with torch.inference_mode():
            frames = self.start_frames[k:k + 1].to(self.device).float() / 127.5 - 1  # (1, C, 3, H, W)
            actions = self.start_actions[k:k + 1].to(self.device)
            self._state = self.model.start(frames, actions)
        return self._to_image(frames[0, -1])

    @property
    def context_frames(self) -> int:
        """How many real frames `reset_from` needs (the model's context length C)."""
        return int(self.model.context_frames)

    def reset_from(self, frames: np.ndarray, actions: Sequence[int], seed: int | None = None) -> np.ndarray:
        """Start from a live real context instead of a stored one (the split view's real game).

        Args:
            frames: (C, H, W, 3) uint8 real frames, any size (area-resized to the model's).
            actions: the C - 1 actions taken between them.
        Returns the newest context frame at model resolution, (R, R, 3) uint8.
        """
        from models.data import resize_frames

        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._generator.manual_seed(int(self._rng.integers(2**62)))
        small = resize_frames(np.asarray(frames, dtype=np.uint8), int(self.model.resolution))
        with torch.inference_mode():  # as in reset
            x = torch.from_numpy(small)[None].to(self.device).float() / 127.5 - 1  # (1, C, 3, R, R)
            act = torch.as_tensor(list(actions), dtype=torch.long, device=self.device)[None]
            self._state = self.model.start(x, act)
        return self._to_image(x[0, -1])

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        if not 0 <= int(action) < self.spec.num_actions:
            raise UserError(f"action {action} is out of range for {self.spec.name} "
                            f"({self.spec.num_actions} actions)")
        t0 = time.perf_counter()
        act = torch.tensor([int(action)], device=self.device)
        with torch.inference_mode():
            self._state, pred = self.model.advance(self._state, act, self.event_vector(events),
                                                   self._generator)
            frame = self._to_image(pred.frame[0])  # copies to host: includes the GPU's time
            reward = float(pred.reward[0])
            terminated = bool(pred.termination[0] > 0.5)
        ms = (time.perf_counter() - t0) * 1000
        return Step(frame=frame, reward=reward, terminated=terminated, truncated=False,
                    info={"ms": ms, "sampler": self.sampler})

    @staticmethod
    def _to_image(frame: torch.Tensor) -> np.ndarray:
        """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
        img = ((frame.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return img.permute(1, 2, 0).contiguous().cpu().numpy()

    def close(self) -> None:
        self._state = None


def open_neural_simulator(run_dir: str | Path, device: str | None = "auto",
                          sampler: str | None = None, compile: bool = False) -> NeuralSimulator:
    """Load a run directory (models/checkpoint.py) as a playable simulator.

    Args:
        run_dir: RUN written by `train.py fit`.
        device: auto (cuda if available, else cpu with a warning), cpu or cuda[:N].
        sampler: sampler preset to start with (default: the one in the run's config).
        compile: torch.compile the step (see `NeuralSimulator`).
    """
    from models.checkpoint import load_run, read_config

    read_config(run_dir)  # a missing or foreign run fails before any device warning
    dev = resolve_device(device)
    run = load_run(run_dir, dev)
    preset = run.config.get("preset", "")
    name = f"{run.config.get('family', '?')} {preset} ({Path(run_dir).name})".replace("  ", " ")
    bank = run.event_bank
    trained = (run.config.get("events") or {}).get("trained")
    if isinstance(trained, list):  # a vector the training data never showed would only pretend
        bank = {k: v for k, v in bank.items() if k in trained}
    return NeuralSimulator(run.model, run.spec, run.start_frames, run.start_actions, bank,
                           dev, model_name=name, sampler=sampler, compile=compile)

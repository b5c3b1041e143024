"""Process-level parts of training, apart from the loop: torchrun/DDP membership, the module DDP
wraps, EMA weights, which parameters train, the Ctrl+C stop flag and RNG snapshots for bit-exact
resume."""

from __future__ import annotations

import copy
import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from models.config import ConfigError


@dataclass
class Dist:
    """This process's place in a torchrun job (world 1 when not launched by torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")))


class LossModule(nn.Module):
    """Lets DDP hook the model: its forward is the family's loss."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.loss(batch)  # type: ignore[operator]


class EMA:
    """Exponential moving average of a model's floating-point state (Polyak averaging)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._pairs: tuple[list[torch.Tensor], ...] | None = None

    def _match(self, model: nn.Module) -> tuple[list[torch.Tensor], ...]:
        """(ema floats, model floats, ema others, model others), each shared tensor once."""
        src = model.state_dict()
        out: tuple[list[torch.Tensor], ...] = ([], [], [], [])
        seen: set[int] = set()
        for name, value in self.model.state_dict().items():
            if value.data_ptr() in seen:  # a module registered under two names: update it once
                continue
            seen.add(value.data_ptr())
            k = 0 if value.is_floating_point() else 2
            out[k].append(value)
            out[k + 1].append(src[name].detach())
        return out

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        if self._pairs is None:
            self._pairs = self._match(model)
        ema_f, src_f, ema_o, src_o = self._pairs
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(ema_f, src_f, 1 - d)  # ema += (1 - d) * (param - ema), one kernel per group
        for dst, src in zip(ema_o, src_o):
            dst.copy_(src)


class StopFlag:
    """First Ctrl+C / SIGTERM: finish the step, save, stop. Second Ctrl+C: stop at once."""

    def __init__(self) -> None:
        self.stop = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if threading_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def freeze_except(model: nn.Module, names: tuple[str, ...]) -> None:
    """Leave `requires_grad` on only for the parameters whose name is in `names` or starts with
    one of them followed by a dot (train.trainable); a name that matches nothing is an error."""
    def under(name: str, want: str) -> bool:
        return name == want or name.startswith(want + ".")

    params = dict(model.named_parameters())
    for want in names:
        if not any(under(n, want) for n in params):
            modules = sorted({n.rsplit(".", 1)[0] for n in params})
            like = [m for m in modules if want.rsplit(".", 1)[-1] in m] or modules
            raise ConfigError(f"train.trainable names {want!r}, which is no parameter of this model; "
                              f"e.g. {', '.join(like[:6])}")
    for n, p in params.items():
        # `and`: a stage (models.ar_world set_stage) may have frozen some already.
        p.requires_grad_(p.requires_grad and any(under(n, w) for w in names))

"""Simulator-side state of the frame loop and the worker that runs it.

Every `_Session` method runs on one thread (the loop's worker, or the caller when headless):
the simulator, the real game of split view, the autopilot and the recorder are only ever
touched from there, so none of them needs to be thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.simulator import Simulator, Step, WorldEvent


class Policy(Protocol):
    def reset(self) -> None: ...
    def act(self, frame: np.ndarray, sim: Simulator) -> int: ...


class Recorder(Protocol):
    def begin_episode(self, first_frame: np.ndarray, seed: int | None) -> Any: ...
    def add(self, action: int, step: Step, events: Sequence[WorldEvent]) -> Any: ...
    def end_episode(self) -> Any: ...
    def close(self) -> Any: ...


@dataclass
class Outcome:
    """What the worker hands back after one job (reset, step or split toggle)."""

    frame: np.ndarray
    step: Step | None = None
    action: int = 0
    ms: float = 0.0
    real_frame: np.ndarray | None = None
    psnr: float | None = None
    real_ended: bool = False
    """Split view: the real side's episode ended (both sides then restart together)."""


def resize_area(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) uint8 -> (height, width, C) uint8, each output pixel the mean of its source box.

    Boxes as in adaptive average pooling (torch's "area" interpolation, which the training data
    uses): output row i covers source rows floor(i*H/h) .. ceil((i+1)*H/h). Summed through an
    integral image, so any size ratio costs the same.
    """
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    integral = np.pad(frame.astype(np.float64), ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    i, j = np.arange(height), np.arange(width)
    r0, r1 = (i * h) // height, -((-(i + 1) * h) // height)
    c0, c1 = (j * w) // width, -((-(j + 1) * w) // width)
    sums = (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])
    area = ((r1 - r0)[:, None] * (c1 - c0)[None, :])[..., None]
    return np.clip(np.rint(sums / area), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two uint8 frames of the same shape (capped at 99 for identical)."""
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse <= 1e-10 else float(10.0 * np.log10(255.0 ** 2 / mse))


class Session:
    """Simulator-side state; every method runs on the worker thread (or inline when headless)."""

    def __init__(self, sim: Simulator, recorder: Recorder | None, policy: Policy | None,
                 seed: int, make_real: Callable[[], Simulator] | None) -> None:
        self.sim, self.recorder, self.policy = sim, recorder, policy
        self.make_real = make_real
        self.real: Simulator | None = None
        self.next_seed = seed
        self.frame: np.ndarray | None = None
        self.recording = False

    def reset(self) -> Outcome:
        if self.recorder is not None and self.recording:
            self.recording = False
            self.recorder.end_episode()
        seed, self.next_seed = self.next_seed, self.next_seed + 1
        real_frame = None
        if self.real is not None and hasattr(self.sim, "reset_from"):
            self.frame, real_frame = self._reset_aligned(seed)
        else:
            self.frame = self.sim.reset(seed)
            real_frame = self.real.reset(seed) if self.real is not None else None
        if self.policy is not None:
            self.policy.reset()
        if self.recorder is not None:
            self.recorder.begin_episode(self.frame, seed)
            self.recording = True
        return self._outcome(Outcome(self.frame, real_frame=real_frame))

    def _reset_aligned(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Split view: start the model from the real game's own first frames (NOOPs between
        them), so both sides begin in the same state and divergence measures the model alone."""
        assert self.real is not None
        neural: Any = self.sim
        frames = [self.real.reset(seed)]
        actions = [0] * (int(neural.context_frames) - 1)
        for a in actions:
            frames.append(self.real.step(a, ()).frame)
        return neural.reset_from(np.stack(frames), actions, seed), frames[-1]

    def step(self, action: int, events: tuple[WorldEvent, ...]) -> Outcome:
        if self.policy is not None:
            assert self.frame is not None
            action = self.policy.act(self.frame, self.sim)
        t0 = time.perf_counter()
        st = self.sim.step(action, events)
        ms = (time.perf_counter() - t0) * 1000.0
        real_frame, real_ended = None, False
        if self.real is not None:
            real_st = self.real.step(action, events)
            real_frame, real_ended = real_st.frame, real_st.terminated or real_st.truncated
        if self.recorder is not None:
            self.recorder.add(action, st, events)
        self.frame = st.frame
        return self._outcome(Outcome(st.frame, step=st, action=action, ms=ms, real_frame=real_frame,
                                     real_ended=real_ended))

    def _outcome(self, out: Outcome) -> Outcome:
        if out.real_frame is not None:  # divergence at the model's resolution
            h, w = out.frame.shape[:2]
            out.psnr = psnr(out.frame, resize_area(out.real_frame, h, w))
        return out

    def set_split(self, on: bool) -> Outcome:
        """Start (or stop) the real game beside the neural one; both restart together."""
        if on and self.real is None and self.make_real is not None:
            self.real = self.make_real()
        elif not on and self.real is not None:
            self.real.close()
            self.real = None
        self.next_seed -= 1  # same episode seed again, now on both sides
        return self.reset()

    def set_sampler(self, name: str) -> None:
        neural: Any = self.sim  # only neural simulators have sampler presets
        neural.set_sampler(name)

    def close(self) -> None:
        try:
            if self.recorder is not None:
                if self.recording:
                    self.recording = False
                    self.recorder.end_episode()
                self.recorder.close()
        finally:
            if self.real is not None:
                self.real.close()


class Runner:
    """Runs one session job at a time: on a worker thread, or inline (headless)."""

    def __init__(self, threaded: bool) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="simulator") if threaded else None
        self._future: Future[Any] | None = None
        self._done: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._pool is None:
            self._done.append(fn(*args))
        else:
            self._future = self._pool.submit(fn, *args)

    @property
    def idle(self) -> bool:
        return self._future is None and not self._done

    def poll(self) -> Any | None:
        """The finished job's result (re-raising its exception), or None if none finished."""
        if self._done:
            return self._done.pop()
        if self._future is not None and self._future.done():
            future, self._future = self._future, None
            return future.result()
        return None

    def wait(self, timeout: float | None = None) -> None:
        """Block until the job in flight is done (headless: no window to keep alive)."""
        if self._future is not None:
            wait([self._future], timeout=timeout)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

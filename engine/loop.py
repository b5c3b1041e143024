"""The one frame loop: real and neural games, windowed and headless, all through `Simulator`.

Two clocks run side by side:

- the display clock (~60 Hz, main thread): poll pygame events into `engine.controls.InputState`, draw the
  latest frame and the HUD. It never waits for a simulator.
- the game clock (`GameSpec.steps_per_second`): when a step is due and the previous one is
  done, the pressed keys (plus any tapped since the last step) become an action and one
  `Simulator.step` is handed to a worker thread. Torch and the emulators release the GIL
  while they compute, so a slow model step slows the game, never the window.

Headless (no display) runs the same loop inline and unpaced, with an autopilot choosing the
actions, and returns a `LoopSummary` with frame-time figures for tests and benchmarks.
All simulator, policy and recorder calls happen on one thread (the worker, or the caller
when headless), so none of them needs to be thread-safe.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.controls import InputState
from engine.session import Outcome, Policy, Recorder, Runner, Session
from engine.simulator import Simulator


class KeyResolver(Protocol):
    def resolve(self, pressed: set[str]) -> int: ...


@dataclass(frozen=True)
class LoopConfig:
    max_steps: int | None = None
    """Stop after this many simulator steps (all episodes together); None: until quit."""
    max_episodes: int | None = None
    """Stop after this many finished episodes; None: start a new one each time."""
    seed: int | None = None
    """Seed of the first episode; episode k uses seed + k. None: a random base seed."""
    paced: bool | None = None
    """Step at GameSpec.steps_per_second (None: paced when windowed, flat out when headless)."""
    threaded: bool | None = None
    """Step on a worker thread (None: threaded when windowed, inline when headless)."""
    screenshot_dir: str = "screenshots"


@dataclass
class LoopSummary:
    steps: int
    episodes: int
    """Finished episodes (terminated or truncated)."""
    returns: list[float]
    """Summed reward of each finished episode."""
    current_return: float
    """Summed reward so far of the episode still running at the end (0 if none was)."""
    step_ms_p50: float
    step_ms_p99: float
    """Wall time of Simulator.step per agent step (policy and recorder excluded)."""
    frame_ms_p50: float | None
    frame_ms_p99: float | None
    """Display frame time, windowed only (what a player feels as hitches)."""
    wall_s: float
    steps_per_s: float
    seeds: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    p50, p99 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99])
    return float(p50), float(p99)


class FrameLoop:
    """Plays one simulator until quit, --max-steps or --max-episodes.

    Args:
        sim: the game (real or neural) to play.
        config: stop conditions, seed, pacing.
        display: an open `engine.display.Display`; None runs headless.
        controls: input state for the window (keyboard play); ignored headless.
        keymap: abstract keys -> action index (`Keymap.for_spec(spec)`).
        policy: autopilot choosing every action instead of the keyboard.
        recorder: gets every step; its episode is closed however the loop ends.
        console: world-event console (engine.console.Console), windowed only.
        audio: `engine.audio.AudioOut` fed with each step's samples.
        make_real: builds the real game for split view (Tab); None disables it.
        on_frame: called once per loop iteration with the iteration index (tests post events).
    """

    def __init__(self, sim: Simulator, config: LoopConfig = LoopConfig(), *,
                 display: Any = None, controls: InputState | None = None,
                 keymap: KeyResolver | None = None, policy: Policy | None = None,
                 recorder: Recorder | None = None, console: Any = None, audio: Any = None,
                 make_real: Callable[[], Simulator] | None = None,
                 on_frame: Callable[[int], None] | None = None) -> None:
        self.sim, self.config, self.display = sim, config, display
        self.controls, self.keymap, self.policy = controls, keymap, policy
        self.console, self.audio, self.on_frame = console, audio, on_frame
        seed = config.seed if config.seed is not None else int(np.random.default_rng().integers(2**31))
        self.session = Session(sim, recorder, policy, seed, make_real)
        self.runner = Runner(threaded=config.threaded if config.threaded is not None else display is not None)
        self.paced = config.paced if config.paced is not None else display is not None
        self.period = 1.0 / max(sim.spec.steps_per_second, 1e-6)
        self.recording = recorder is not None
        self.presets: list[str] = list(getattr(sim, "sampler_presets", []) or [])
        self.can_split = make_real is not None
        # play state (main thread)
        self.quit = self.paused = self.split = self.interrupted = False
        self.want_reset, self.want_shot = True, False
        self.want_split: bool | None = None
        self.want_sampler: str | None = None
        self.last: Outcome | None = None
        self.steps = self.episodes = self.episode_index = self.episode_step = 0
        self.episode_return = 0.0
        self.episode_done = False
        self.lives: Any = None
        self.returns: list[float] = []
        self.seeds: list[int] = []
        self.step_ms: list[float] = []
        self.frame_ms: list[float] = []
        self.step_times: deque[float] = deque(maxlen=64)
        self.next_step_at = 0.0

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> LoopSummary:
        t_start = time.perf_counter()
        try:
            i = 0
            while not self._finished():
                if self.display is not None:
                    self._poll_events()
                out = self.runner.poll()
                if out is not None:
                    self._absorb(out)
                if self.runner.idle and not self._finished():
                    self._schedule(time.perf_counter())
                if self.display is not None:
                    self._draw()
                else:  # headless on a worker: sleep until the step is done instead of spinning
                    self.runner.wait()
                if self.on_frame is not None:
                    self.on_frame(i)
                i += 1
        except KeyboardInterrupt:  # Ctrl+C ends play like Esc: the episode is closed below
            self.interrupted = True
        finally:
            try:
                self.runner.shutdown()  # let an in-flight step finish before closing its episode
            finally:  # even if a second Ctrl+C lands while waiting
                if self.audio is not None:
                    self.audio.close()
                self.session.close()
        return self._summary(time.perf_counter() - t_start)

    def _finished(self) -> bool:
        cfg = self.config
        if self.quit:
            return True
        if not self.runner.idle:
            return False
        return bool((cfg.max_steps is not None and self.steps >= cfg.max_steps)
                    or (cfg.max_episodes is not None and self.episodes >= cfg.max_episodes))

    def _schedule(self, now: float) -> None:
        """Hand the worker its next job: a split toggle, a reset, a sampler change or a step."""
        if self.want_split is not None:
            on, self.want_split = self.want_split, None
            self.split, self.want_reset = on, False  # the toggle restarts both sides itself
            self.seeds.append(self.session.next_seed - 1)
            self.runner.submit(self.session.set_split, on)
        elif self.want_reset:
            self.want_reset = False
            self.seeds.append(self.session.next_seed)
            self.runner.submit(self.session.reset)
        elif self.want_sampler is not None:
            name, self.want_sampler = self.want_sampler, None
            self.runner.submit(self.session.set_sampler, name)
        elif not self.paused and (not self.paced or now >= self.next_step_at):
            # no catch-up bursts after a slow step: the game slows down instead
            self.next_step_at = max(self.next_step_at + self.period, now)
            events = tuple(self.console.active) if self.console is not None else ()
            self.runner.submit(self.session.step, self._action(), events)

    def _action(self) -> int:
        keys = self.controls.take() if self.controls is not None else set()
        if self.policy is not None or self.keymap is None:
            return 0  # the policy decides on the worker, from the frame it sees
        return int(self.keymap.resolve(keys))

    def _absorb(self, out: Any) -> None:
        if not isinstance(out, Outcome):  # set_sampler returns nothing
            return
        self.last = out
        st = out.step
        if st is None:  # a reset
            self.episode_index += 1
            self.episode_step, self.episode_return, self.lives = 0, 0.0, None
            self.episode_done = False
            if self.audio is not None:
                self.audio.clear()
            return
        self.steps += 1
        self.episode_step += 1
        self.episode_return += float(st.reward)
        self.lives = st.info.get("lives", self.lives)
        self.step_ms.append(out.ms)
        self.step_times.append(time.perf_counter())
        if self.audio is not None:
            self.audio.push(st.audio)
        if st.terminated or st.truncated:
            self.episodes += 1
            self.returns.append(self.episode_return)
            self.want_reset = self.episode_done = True
        elif out.real_ended:
            self.want_reset = True

    # -- window ---------------------------------------------------------------------------
    def _poll_events(self) -> None:
        import pygame

        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                self.quit = True
            elif event.type == pygame.VIDEORESIZE:
                self.display.handle_resize(event)
            elif event.type == pygame.KEYUP:
                if self.console is not None:
                    self.console.handle_key(event)
                if self.controls is not None:  # a release always counts, console open or not
                    self.controls.handle(event)
            elif event.type in (pygame.KEYDOWN, pygame.TEXTINPUT):
                if self.console is not None and self.console.handle_key(event):
                    continue
                if event.type == pygame.KEYDOWN and self._hotkey(event.key):
                    continue
                if self.controls is not None:
                    self.controls.handle(event)
            elif self.controls is not None:
                self.controls.handle(event)

    def _hotkey(self, key: int) -> bool:
        import pygame

        if key == pygame.K_ESCAPE:
            self.quit = True
        elif key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            self.want_reset = True
        elif key == pygame.K_p:
            self.paused = not self.paused
            if self.audio is not None:
                self.audio.clear()
        elif key == pygame.K_F12:
            self.want_shot = True
        elif key == pygame.K_TAB:
            if self.can_split:
                self.want_split = not self.split
        elif key == pygame.K_F2:
            if self.presets:
                current = str(getattr(self.sim, "sampler", self.presets[0]))
                i = self.presets.index(current) if current in self.presets else -1
                self.want_sampler = self.presets[(i + 1) % len(self.presets)]
        else:
            return False
        return True

    def _draw(self) -> None:
        out = self.last
        if out is None:  # the first reset is still running
            self.frame_ms.append(self.display.present())
            return
        if self.display.split != (out.real_frame is not None):
            self.display.set_split(out.real_frame is not None)
        self.display.set_frame_shape(out.frame.shape[:2])
        overlay = list(self.console.hud_lines()) if self.console is not None else []
        self.display.draw(out.frame, self.hud_lines(), overlay, right=out.real_frame)
        if self.console is not None:
            self.console.draw(self.display.window)
        if self.want_shot:
            self.want_shot = False
            try:
                path = self.display.screenshot(self.config.screenshot_dir, self.sim.spec.name)
                print(f"screenshot saved to {path}")
            except Exception as err:  # noqa: BLE001 - a screenshot that cannot be saved never ends play
                print(f"warning: screenshot not saved ({type(err).__name__}: {err})", file=sys.stderr)
        self.frame_ms.append(self.display.present())

    def hud_lines(self) -> list[str]:
        """The three HUD lines: score and progress; speed; model, sampler and split view."""
        spec = self.sim.spec
        lives = f"  lives {self.lives}" if self.lives is not None else ""
        state = "  PAUSED" if self.paused else ""
        score = self.episode_return
        shown = f"{score:.0f}" if score == round(score) else f"{score:.1f}"
        line1 = (f"{spec.name}  score {shown}{lives}  episode {self.episode_index}"
                 f"  step {self.episode_step}{state}")
        ms = self.last.step.info.get("ms", self.last.ms) if self.last and self.last.step else 0.0
        sps = 0.0
        if len(self.step_times) >= 2:
            span = self.step_times[-1] - self.step_times[0]
            sps = (len(self.step_times) - 1) / span if span > 0 else 0.0
        rec = "  REC" if self.recording else ""
        line2 = f"{self.display.fps:.0f} FPS  {float(ms):.1f} ms/frame  {sps:.1f} steps/s{rec}"
        model = getattr(self.sim, "model_name", None)
        parts = [f"model {model}" if model is not None else "real game"]
        if self.presets:
            parts.append(f"sampler {getattr(self.sim, 'sampler', '?')} (F2)")
        if self.split and self.last is not None and self.last.psnr is not None:
            parts.append(f"split: PSNR {self.last.psnr:.1f} dB vs real (Tab)")
        elif self.can_split:
            parts.append("Tab: split view")
        if model is None and not self.can_split:
            parts.append("Enter reset, P pause, F12 screenshot, Esc quit")
        line3 = "   ".join(parts)
        return [line1, line2, line3]

    def _summary(self, wall_s: float) -> LoopSummary:
        s50, s99 = _percentiles(self.step_ms)
        f50, f99 = _percentiles(self.frame_ms) if self.frame_ms else (None, None)
        return LoopSummary(
            steps=self.steps, episodes=self.episodes, returns=self.returns,
            current_return=0.0 if self.episode_done else self.episode_return, step_ms_p50=s50, step_ms_p99=s99,
            frame_ms_p50=f50, frame_ms_p99=f99, wall_s=wall_s,
            steps_per_s=self.steps / wall_s if wall_s > 0 else 0.0, seeds=self.seeds)

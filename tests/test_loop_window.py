"""The windowed loop (SDL dummy driver) driven by synthetic pygame key events."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pygame
import pytest

from engine.controls import InputState
from engine.display import Display, DisplayConfig
from engine.games import make_simulator
from engine.keymap import Keymap, pygame_key_names
from engine.loop import FrameLoop, LoopConfig
from engine.simulator import Simulator, Step, WorldEvent


class ActionLog:
    """The real game, with every action it was stepped with written down (thread-safe append)."""

    def __init__(self, sim: Simulator, delay_s: float = 0.0) -> None:
        self.sim, self.spec, self.delay_s = sim, sim.spec, delay_s
        self.actions: list[int] = []
        self.resets = 0
        self.threads: set[str] = set()

    def reset(self, seed: int | None = None) -> np.ndarray:
        self.resets += 1
        return self.sim.reset(seed)

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow step, as from a model on a weak CPU
        self.actions.append(action)
        return self.sim.step(action, events)

    def close(self) -> None:
        self.sim.close()


def key(kind: int, code: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=code, mod=0, unicode="", scancode=0)


def tap(code: int) -> None:
    pygame.event.post(key(pygame.KEYDOWN, code))
    pygame.event.post(key(pygame.KEYUP, code))


@pytest.fixture
def breakout() -> ActionLog:
    log = ActionLog(make_simulator("breakout", audio=False))
    yield log
    log.close()


def windowed_loop(sim: ActionLog, script: Callable[[int, FrameLoop], None],
                  tmp_path: Path, max_steps: int | None = None) -> tuple[FrameLoop, Display]:
    display = Display(DisplayConfig(scale=2), (210, 160))
    loop = FrameLoop(sim, LoopConfig(max_steps=max_steps, seed=0, screenshot_dir=str(tmp_path)),
                     display=display, controls=InputState(pygame_key_names()),
                     keymap=Keymap.for_spec(sim.spec))
    loop.on_frame = lambda i: script(i, loop)
    return loop, display


def test_tap_between_steps_is_not_lost_and_held_key_repeats(breakout: ActionLog, tmp_path: Path) -> None:
    fire = breakout.spec.action_meanings.index("FIRE")
    right = breakout.spec.action_meanings.index("RIGHT")
    marks: dict[str, int] = {}

    def script(i: int, loop: FrameLoop) -> None:
        if i == 10:
            marks["tap"] = len(breakout.actions)
            tap(pygame.K_SPACE)  # down and up within one display frame: far shorter than a step
        elif i == 30:
            marks["hold"] = len(breakout.actions)
            pygame.event.post(key(pygame.KEYDOWN, pygame.K_d))
        elif i == 60:
            pygame.event.post(key(pygame.KEYUP, pygame.K_d))
            marks["release"] = len(breakout.actions)
        elif i == 80:
            pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))

    loop, display = windowed_loop(breakout, script, tmp_path)
    try:
        summary = loop.run()
    finally:
        display.close()
    acts = breakout.actions
    assert acts.count(fire) == 1 and acts.index(fire) >= marks["tap"]
    held = acts[marks["hold"]:marks["release"] + 1]
    assert held.count(right) >= 5  # 30 display frames at 60 Hz ~ 7 steps at 15 steps/s
    assert right not in acts[marks["release"] + 2:]
    assert summary.frame_ms_p50 is not None and summary.frame_ms_p50 < 40
    assert "MainThread" not in breakout.threads  # steps ran on the worker


def test_pause_stops_steps_and_enter_resets(breakout: ActionLog, tmp_path: Path) -> None:
    seen: dict[str, int] = {}

    def script(i: int, loop: FrameLoop) -> None:
        if i == 20:
            tap(pygame.K_p)
        elif i == 25:
            seen["paused_at"] = loop.steps
            assert loop.paused
        elif i == 70:
            seen["still"] = loop.steps
            assert "PAUSED" in loop.hud_lines()[0]
            tap(pygame.K_p)
            tap(pygame.K_RETURN)
            tap(pygame.K_F12)
        elif i == 110:
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    loop, display = windowed_loop(breakout, script, tmp_path)
    try:
        loop.run()
    finally:
        display.close()
    assert seen["still"] == seen["paused_at"]  # 45 display frames paused: not one step
    assert loop.steps > seen["still"]
    assert breakout.resets == 2
    assert len(list(tmp_path.glob("breakout-*.png"))) == 1


def test_slow_steps_never_block_the_display(tmp_path: Path) -> None:
    slow = ActionLog(make_simulator("breakout", audio=False), delay_s=0.2)  # 5 steps/s at best

    def script(i: int, loop: FrameLoop) -> None:
        if i == 40:
            pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))

    loop, display = windowed_loop(slow, script, tmp_path)
    try:
        t0 = time.perf_counter()
        summary = loop.run()
        wall = time.perf_counter() - t0
    finally:
        display.close()
        slow.close()
    # 40 display frames at 60 Hz while each step takes 200 ms: the window kept its rate
    assert wall < 1.5
    assert summary.frame_ms_p50 is not None and summary.frame_ms_p50 < 40
    assert 1 <= summary.steps <= 6


def test_max_steps_windowed_closes_recording(breakout: ActionLog, tmp_path: Path) -> None:
    from engine.dataset import Recorder, open_dataset

    display = Display(DisplayConfig(), (210, 160))
    recorder = Recorder(tmp_path / "rec", breakout.spec)
    loop = FrameLoop(breakout, LoopConfig(max_steps=20, seed=4, paced=False), display=display,
                     controls=InputState(pygame_key_names()), keymap=Keymap.for_spec(breakout.spec),
                     recorder=recorder)
    try:
        loop.run()
    finally:
        display.close()
    ep = open_dataset(tmp_path / "rec").load(0)
    assert ep.actions.shape == (20,) and ep.meta["complete"]


def test_input_state_taps_and_aliases() -> None:
    state = InputState(pygame_key_names())
    state.handle(key(pygame.KEYDOWN, pygame.K_w))
    state.handle(key(pygame.KEYDOWN, pygame.K_UP))
    state.handle(key(pygame.KEYUP, pygame.K_UP))
    assert state.pressed == {"up"}  # W still holds "up"
    state.handle(key(pygame.KEYDOWN, pygame.K_SPACE))
    state.handle(key(pygame.KEYUP, pygame.K_SPACE))
    assert state.take() == {"up", "fire"}
    assert state.take() == {"up"}  # a tap counts once
    state.handle(pygame.event.Event(pygame.WINDOWFOCUSLOST))
    assert state.take() == set()


def test_display_fits_any_frame_size() -> None:
    display = Display(DisplayConfig(scale=3), (64, 64))
    try:
        for shape in ((64, 64, 3), (96, 96, 3), (210, 160, 3)):
            frame = np.full(shape, 90, np.uint8)
            display.set_frame_shape(shape[:2])
            display.draw(frame, ["a", "b", "c"], overlay=["rain (make it rain, 0.81)"])
            display.draw(frame, ["split"], right=np.zeros((210, 160, 3), np.uint8))
            display.present()
        display.handle_resize(pygame.event.Event(pygame.VIDEORESIZE, w=333, h=500, size=(333, 500)))
        display.draw(np.zeros((64, 64, 3), np.uint8), ["resized"])
        assert display.window.get_size() == (333, 500)
    finally:
        display.close()


def test_split_view_feeds_both_sides_the_same_keys(tmp_path: Path) -> None:
    """Tab starts a second (real) game beside the first, reset together and fed the same
    actions; with the real game on both sides the divergence figure must read identical."""
    main = ActionLog(make_simulator("breakout", audio=False))
    psnrs: list[float] = []

    def script(i: int, loop: FrameLoop) -> None:
        if i == 5:
            tap(pygame.K_TAB)
        elif 10 <= i < 60 and i % 10 == 0:
            tap(pygame.K_SPACE)
            pygame.event.post(key(pygame.KEYDOWN if i % 20 else pygame.KEYUP, pygame.K_LEFT))
        if loop.last is not None and loop.last.psnr is not None:
            psnrs.append(loop.last.psnr)
        if i == 70:
            assert loop.display.split and "PSNR 99.0 dB" in loop.hud_lines()[2]
            tap(pygame.K_TAB)
        elif i == 80:
            assert loop.session.real is None and not loop.display.split
            pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))

    display = Display(DisplayConfig(scale=2), (210, 160))
    loop = FrameLoop(main, LoopConfig(seed=2), display=display,
                     controls=InputState(pygame_key_names()), keymap=Keymap.for_spec(main.spec),
                     make_real=lambda: make_simulator("breakout", audio=False),
                     on_frame=lambda i: script(i, loop))
    try:
        loop.run()
    finally:
        display.close()
        main.close()
    assert main.resets == 3  # start, split on, split off
    assert len(psnrs) > 20 and set(psnrs) == {99.0}
    assert set(main.actions) >= {0, 1}

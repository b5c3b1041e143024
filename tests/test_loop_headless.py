"""Headless play of the real games through the frame loop and through play.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.autopilot import make_policy
from engine.games import make_simulator
from engine.loop import FrameLoop, LoopConfig
from engine.session import psnr, resize_area

ROOT = Path(__file__).resolve().parents[1]


def run_play(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "play.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("game,steps", [("breakout", 600), ("carracing", 60)])
def test_loop_api_headless_scripted(game: str, steps: int) -> None:
    sim = make_simulator(game, audio=False)
    try:
        loop = FrameLoop(sim, LoopConfig(max_steps=steps, seed=3),
                         policy=make_policy("scripted", sim.spec, seed=3))
        summary = loop.run()
    finally:
        sim.close()
    assert summary.steps == steps
    assert summary.seeds[0] == 3
    assert summary.step_ms_p50 > 0 and summary.step_ms_p99 >= summary.step_ms_p50
    assert summary.frame_ms_p50 is None  # headless: no display frames
    if game == "breakout":  # the scripted player follows the ball: it scores and loses lives
        assert summary.episodes >= 1 and sum(summary.returns) + summary.current_return > 0
    else:  # the driver stays on the track and collects tiles
        assert summary.current_return > 0


def test_loop_headless_is_deterministic_by_seed() -> None:
    def play() -> tuple[list[float], float]:
        sim = make_simulator("breakout", audio=False)
        try:
            s = FrameLoop(sim, LoopConfig(max_steps=400, seed=11),
                          policy=make_policy("random", sim.spec, seed=11)).run()
        finally:
            sim.close()
        return s.returns, s.current_return

    assert play() == play()


def test_play_cli_headless_breakout_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    proc = run_play("--game", "breakout", "--real", "--headless", "--max-steps", "300",
                    "--autopilot", "scripted", "--seed", "0", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(out.read_text())
    assert summary["steps"] == 300
    assert "steps/s" in proc.stdout and "p99" in proc.stdout


def test_play_cli_headless_carracing() -> None:
    proc = run_play("--game", "carracing", "--real", "--headless", "--max-steps", "40",
                    "--autopilot", "random", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "played 40 steps" in proc.stdout


def test_play_cli_records_readable_dataset(tmp_path: Path) -> None:
    from engine.dataset import open_dataset

    data = tmp_path / "rec"
    for seed in ("5", "6"):  # two sessions append to the same directory
        proc = run_play("--game", "breakout", "--real", "--headless", "--max-steps", "50",
                        "--record", str(data), "--seed", seed)
        assert proc.returncode == 0, proc.stderr
    ds = open_dataset(data)
    assert len(ds) == 2
    ep = ds.load(0)
    assert ep.actions.shape == (50,)
    assert ep.observations.shape == (51, 210, 160, 3)
    assert ep.audio is not None and ep.audio.shape[0] == 50  # audio is recorded even headless
    assert ep.meta["seed"] == 5 and ep.meta["complete"]


def test_play_cli_unknown_game_one_error_line() -> None:
    proc = run_play("--game", "brekout", "--real", "--headless", "--max-steps", "5")
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "breakout" in errors[0]
    assert "Traceback" not in proc.stderr


def test_play_cli_unwritable_record_dir_fails_before_playing(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run_play("--game", "breakout", "--real", "--headless", "--max-steps", "5",
                    "--record", str(blocker / "rec"))
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "cannot record" in errors[0]
    assert "played" not in proc.stdout


def test_play_cli_no_display_suggests_headless() -> None:
    env = dict(os.environ, SDL_VIDEODRIVER="no-such-driver", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(ROOT / "play.py"), "--real", "--max-steps", "5"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    errors = error_lines(proc.stderr)
    assert len(errors) == 1 and "--headless" in errors[0]


def test_play_cli_bad_flags() -> None:
    proc = run_play("--real", "--checkpoint", "x", "--headless")
    assert proc.returncode == 2 and len(error_lines(proc.stderr)) == 1
    proc = run_play("--real", "--headless", "--max-steps", "0")
    assert proc.returncode == 2 and "--max-steps" in proc.stderr


def test_help_teaches() -> None:
    proc = run_play("--help")
    assert proc.returncode == 0
    for needle in ("--checkpoint", "--record", "--headless", "examples:", "F12", "Tab"):
        assert needle in proc.stdout


def test_resize_area_and_psnr() -> None:
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:105] = 200
    small = resize_area(frame, 64, 64)
    assert small.shape == (64, 64, 3)
    assert small[0, 0, 0] == 200 and small[-1, 0, 0] == 0
    assert psnr(small, small) == 99.0
    assert 0 < psnr(small, np.zeros_like(small)) < 20


def test_ctrl_c_closes_the_recorded_episode(tmp_path: Path) -> None:
    import signal
    import time

    from engine.dataset import open_dataset

    data = tmp_path / "rec"
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "play.py"), "--real", "--headless",
                             "--record", str(data), "--seed", "1"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(data.glob("*/steps-*")) and time.monotonic() < deadline:  # playing and writing
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "played" in out
    ds = open_dataset(data)
    steps = ds.num_steps
    assert steps > 0
    meta = ds.load(len(ds) - 1).meta
    assert meta["complete"]  # closed cleanly, not a torn tail

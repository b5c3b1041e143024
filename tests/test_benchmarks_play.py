"""benchmarks/neural_play.py: one pixel-reading player on real Breakout and on the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "benchmarks" / "neural_play.py")
KEYS = {"ball_seen", "ball_flying", "returns", "bricks_broken", "bricks_regrown", "points",
        "points_on_break", "breaks_scored", "ends", "steps_per_s"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=300)


def test_neural_play_scores_the_real_game_and_the_model(tmp_path: Path) -> None:
    out = tmp_path / "play.json"
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "breakout-diffusion"), "--steps", "300",
               "--sampler", "fast", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result["real"]) == KEYS and set(result["fast"]) == KEYS
    real = result["real"]
    # The player reads the real game's 64x64 frames well enough to return the ball and score,
    # and every point it scores is a brick seen to break on that step.
    assert real["ball_flying"] > 0.5 and real["returns"] > 5 and real["points"] > 5, real
    assert real["points_on_break"] == 1.0 and real["bricks_regrown"] == 0.0, real
    assert 0.0 <= result["fast"]["ball_seen"] <= 1.0 and result["fast"]["steps_per_s"] > 0


def test_neural_play_refuses_other_games_and_short_runs() -> None:
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "carracing-diffusion"), "--steps", "20")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: " + str(ROOT / "checkpoints" / "carracing-diffusion") + " is a carracing model; "
        "this benchmark plays Breakout"]
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "breakout-diffusion"), "--steps", "5")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --steps must be >= 10"


def test_flights_and_returns_need_a_ball_that_moves_as_a_ball() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from neural_play import count_returns, flights

    down = [(t, 0.30 + 0.02 * t, 0.50 + 0.03 * t) for t in range(10)]  # y 0.50 -> 0.77
    up = [(t, 0.30 + 0.02 * t, 0.77 - 0.03 * (t - 11)) for t in range(11, 20)]  # hidden at step 10
    fl = flights(down + up)
    assert [len(f) for f in fl] == [10, 9] and count_returns(fl) == 1
    # A ghost flickering between two fixed spots turns back every step: no flight, no return.
    ghost = [(t, 0.3, 0.70 if t % 2 else 0.74) for t in range(40)]
    assert flights(ghost) == [] and count_returns(flights(ghost)) == 0
    # Speckles jumping across the field are no flight either.
    rng = np.random.default_rng(0)
    speckles = [(t, float(rng.random()), float(0.45 + 0.4 * rng.random())) for t in range(200)]
    assert sum(len(f) for f in flights(speckles)) < 10

"""benchmarks/neural_play.py: one pixel-reading player on real Breakout and on the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "benchmarks" / "neural_play.py")
KEYS = {"ball_seen", "ball_flying", "returns", "bricks_broken", "bricks_regrown", "bricks_lost", "points",
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
    # and every point it scores is a brick seen to break within two steps.
    assert real["ball_flying"] > 0.5 and real["returns"] > 5 and real["points"] > 5, real
    assert real["points_on_break"] == 1.0 and real["bricks_regrown"] == 0.0, real
    # The real game loses its bricks crisply: counted slowly or on the step, the same bricks
    # to within one in the 300 steps (bricks_broken adds up what each column lost, 0.8-1.1 a brick).
    assert real["bricks_lost"] > 5 and abs(real["bricks_lost"] - real["bricks_broken"]) * 0.3 <= 1.0, real
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


def test_bricks_lost_counts_fades_and_ignores_flicker() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from neural_play import bricks_lost

    wall = np.full((30, 18), 6.0)
    wall[10:, 3] = 5.0  # a crisp break at view 10
    wall[12:, 7] = np.maximum(4.0, 6.0 - 0.25 * np.arange(1, 19))  # two bricks fading, 4 steps each
    wall[5::2, 12] = 5.6  # flicker of 0.4 every other view: no brick
    wall[20, 14] = 5.0  # one view's dip of a whole brick: the median drops it
    lost = bricks_lost(wall, {0})
    assert lost.sum() == 3 and lost[10] == 1  # the crisp one on its step
    split = bricks_lost(wall, {0, 10})  # an episode starts at the break: its wall is the start
    assert split[10] == 0 and split.sum() == 2
    dip = np.full((8, 18), 6.0)
    dip[-1, 5] = 5.0  # a dip on an episode's last view alone is flicker, as it is mid-episode
    assert bricks_lost(dip, {0}).sum() == 0
    # A wall dimmed by over half a brick loses a brick a column, once: back to full and dimmed
    # again, it has nothing new to lose; a column flickering between 4.4 and 5 loses its one.
    dim = np.full((30, 18), 6.0)
    dim[8:] = 5.3
    assert bricks_lost(dim, {0}).sum() == 18
    dim[16:22] = 6.0
    dim[:, 0] = np.where(np.arange(30) // 3 % 2, 4.4, 5.0)  # in place of a dimmed column
    lost = bricks_lost(dim, {0})
    assert lost.sum() == 18 and lost[3] == 1  # the first dip of the flickering column

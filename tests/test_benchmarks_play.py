"""benchmarks/neural_play.py: one pixel-reading player on real Breakout and on the shipped model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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

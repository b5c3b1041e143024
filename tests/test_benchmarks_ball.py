"""benchmarks/ball_tracking.py: the shipped Breakout model on freshly recorded real play."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import train

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "benchmarks" / "ball_tracking.py")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=300)


def test_ball_tracking_finds_the_ball_and_scores_each_sampler(tmp_path: Path) -> None:
    data = tmp_path / "bk"
    assert train.main(["collect", "--game", "breakout", "--policy", "scripted", "--episodes", "1",
                       "--max-steps", "300", "--no-audio", "--out", str(data)]) == 0
    out = tmp_path / "ball.json"
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "breakout-diffusion"), "--data", str(data),
               "--windows", "3", "--horizon", "2", "--long", "4", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert 1 <= result["windows"] <= 3 and 70 < result["real_peak"] < 200  # the ball, not a brick
    top, bottom = result["band_rows"]
    assert 20 < top < bottom < 60
    # Real flights are straight between bounces: the line through the last two spots finds the next.
    assert result["straight_line"] >= 0.5
    # Through little noise any denoiser shows the ball where it is: the probe finds the right pixel.
    assert result["one_step_by_sigma"]["0.1"] == 1.0
    assert all(0.0 <= v <= 1.0 for v in result["one_step_by_sigma"].values())
    for name in ("fast", "balanced", "quality"):
        assert len(result[name]["at_ball"]) == 2 and len(result[name]["anywhere"]) == 2
        assert all(a <= 1.0 for a in result[name]["at_ball"])
    long = result["long_rollout"]
    assert long["steps"] == [1, 2, 4] and 1 <= long["windows"] <= 3
    assert long["real_red"][0] > 40  # every window starts with the ball in flight: it is still there
    for name in ("real", "fast", "balanced", "quality"):
        shares = long[name] if name == "real" else long[name]["ball"]
        assert len(shares) == 3 and all(0.0 <= v <= 1.0 for v in shares)


def test_a_ball_is_a_compact_spot_not_a_spray_of_speckles() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ball_tracking import ball_like

    band = (30, 55)
    frames = torch.zeros(3, 3, 64, 64)
    frames[1, 0, 40, 20:22] = 90.0  # a ball: two bright pixels
    frames[2, 0, 32:54:2, 6:58:4] = 90.0  # speckles over the whole band
    assert ball_like(frames, band, 45.0).tolist() == [False, True, False]


def test_ball_tracking_refuses_other_games(tmp_path: Path) -> None:
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "carracing-diffusion"), "--data", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: " + str(ROOT / "checkpoints" / "carracing-diffusion") + " is a carracing model; "
        "this measures Breakout's ball"]


def test_ball_returns_tells_returns_from_misses(tmp_path: Path) -> None:
    """benchmarks/ball_returns.py on scripted play (it returns the ball) and random play (it misses):
    it finds both kinds of window; the real frames, scored as if a model drew them, return every
    return and send back no miss, and fly every climb to the wall and break its brick, which a
    model that froze the last context frame does not; a model's shares lie in [0, 1]; an unknown
    preset is one line."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ball_returns import climbed, find_climbs, find_windows, score
    from brick_memory import open_breakout

    data = tmp_path / "bk"
    for policy, seed in (("scripted", "0"), ("random", "5")):
        assert train.main(["collect", "--game", "breakout", "--policy", policy, "--episodes", "1", "--seed", seed,
                           "--max-steps", "300", "--no-audio", "--out", str(data)]) == 0
    checkpoint = str(ROOT / "checkpoints" / "breakout-diffusion")
    run_, recs = open_breakout(checkpoint, str(data), "the ball")
    C = int(run_.model.context_frames)
    returns, misses = find_windows(recs, C, 6)
    assert returns and misses
    for picks, expected in ((returns, (1.0, 1.0)), (misses, (0.0, 0.0))):
        real = np.stack([np.asarray(recs.episodes[e].frames[s: s + C + 6]) for e, s in picks])
        assert score(real, real[:, C:], C) == expected
    climbs = find_climbs(recs, C, 24)
    assert climbs
    real = np.stack([np.asarray(recs.episodes[e].frames[s: s + C + 24]) for e, s in climbs])
    assert climbed(real, real[:, C:], C) == (1.0, 1.0)
    frozen = np.repeat(real[:, C - 1: C], 24, axis=1)
    assert climbed(real, frozen, C) == (0.0, 0.0)
    out = tmp_path / "returns.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ball_returns.py"), "--checkpoint", checkpoint,
                           "--data", str(data), "--windows", "4", "--sampler", "fast", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["return_windows"] == len(returns) and result["miss_windows"] == len(misses)
    assert result["climb_windows"] == len(climbs)
    assert all(0.0 <= result["fast"][k] <= 1.0 for k in ("returned", "miss_sent_back", "climb_reached_wall",
                                                         "climb_broke_brick"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ball_returns.py"), "--checkpoint", checkpoint,
                           "--data", str(data), "--sampler", "slowest"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "no sampler preset 'slowest'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

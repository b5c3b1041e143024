"""benchmarks/brick_memory.py: the shipped Breakout model on freshly recorded real play."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import train

ROOT = Path(__file__).resolve().parents[1]
BENCH = str(ROOT / "benchmarks" / "brick_memory.py")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=300)


def test_brick_memory_measures_holes_with_and_without_the_prompt(tmp_path: Path) -> None:
    data = tmp_path / "bk"
    assert train.main(["collect", "--game", "breakout", "--policy", "scripted", "--episodes", "2",
                       "--max-steps", "400", "--no-audio", "--out", str(data)]) == 0
    out = tmp_path / "bricks.json"
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "breakout-diffusion"), "--data", str(data),
               "--windows", "2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert 1 <= result["windows"] <= 2 and result["context"] > 0.03  # windows picked with holes
    for name in ("without", "with_rebuild_wall", "already_on"):
        assert set(result[name]) == {"1", "4", "8", "16"}
        assert all(0.0 <= share <= 1.0 for share in result[name].values())
    # The shipped model sees the onset (model.event_onset): the prompt rebuilds the wall on the
    # step it starts, and an event already on over the context rebuilds nothing.
    assert result["with_rebuild_wall"]["1"] < 0.5 * min(result["without"]["1"], result["already_on"]["1"])


def test_brick_memory_refuses_other_games_and_missing_data(tmp_path: Path) -> None:
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "carracing-diffusion"), "--data", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: " + str(ROOT / "checkpoints" / "carracing-diffusion") + " is a carracing model; "
        "this measures Breakout's bricks"]
    proc = run("--checkpoint", str(ROOT / "checkpoints" / "breakout-diffusion"), "--data", str(tmp_path / "none"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1

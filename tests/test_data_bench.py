"""Smoke run of benchmarks/collect_speed.py: it plays, records and reports its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_collect_speed_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "collect_speed.py"), "--steps", "60",
         "--policy", "random", "--json", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "collect speed:" in proc.stdout and "steps/s per worker incl. writing" in proc.stdout
    report = json.loads(out.read_text())
    assert report["write"]["runs"][0]["steps"] == 60 and report["write"]["per_worker_cpu"] > 0
    assert report["write"]["runs"][0]["bytes_written"] > 0

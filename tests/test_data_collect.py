"""`train.py collect` on the real games: determinism by seed across worker counts, event tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import train
from engine.dataset import open_dataset


def collect(out: Path, *extra: str) -> int:
    return train.main(["collect", "--game", "breakout", "--out", str(out), *extra])


def test_same_seed_same_data_for_any_worker_count(tmp_path: Path) -> None:
    common = ("--policy", "scripted", "--episodes", "3", "--max-steps", "40", "--seed", "11",
              "--events", "random")
    assert collect(tmp_path / "w2", *common, "--workers", "2") == 0
    assert collect(tmp_path / "w1", *common, "--workers", "1") == 0
    a, b = open_dataset(tmp_path / "w2"), open_dataset(tmp_path / "w1")
    assert len(a) == len(b) == 3
    assert [e.meta["seed"] for e in a.episodes] == [11, 12, 13]
    for i in range(3):
        ea, eb = a.load(i), b.load(i)
        assert ea.num_steps == 40 and ea.truncations[-1] and not ea.truncations[:-1].any()
        for field in ("observations", "actions", "rewards", "terminations", "truncations", "audio"):
            np.testing.assert_array_equal(getattr(ea, field), getattr(eb, field), err_msg=field)
        assert ea.events == eb.events
    # different seeds give different play
    assert not np.array_equal(a.load(0).actions, a.load(1).actions)


def test_runs_append_and_random_policy(tmp_path: Path) -> None:
    assert collect(tmp_path, "--policy", "random", "--episodes", "1", "--max-steps", "20", "--no-audio") == 0
    assert collect(tmp_path, "--policy", "random", "--episodes", "1", "--max-steps", "20", "--seed", "7",
                   "--no-audio") == 0
    assert collect(tmp_path, "--policy", "random", "--episodes", "2", "--max-steps", "5", "--no-audio") == 0
    ds = open_dataset(tmp_path)
    assert [e.id for e in ds.episodes] == [0, 1, 2, 3]
    assert [e.meta["seed"] for e in ds.episodes] == [0, 7, 8, 9]  # appending continues the seeds
    assert ds.load(0).audio is None and ds.episodes[0].meta["extra"]["policy"] == "random"


def test_random_events_are_recorded(tmp_path: Path) -> None:
    assert collect(tmp_path, "--policy", "random", "--episodes", "1", "--max-steps", "150",
                   "--events", "random", "--no-audio") == 0
    ep = open_dataset(tmp_path).load(0)
    active = [names for names in ep.events if names]
    assert active, "a 150-step episode should see at least one scheduled event"
    name, prompt = active[0][0]
    assert name and prompt
    assert ep.meta["extra"]["events"] == "random"


def test_carracing_collect(tmp_path: Path) -> None:
    assert train.main(["collect", "--game", "carracing", "--policy", "scripted", "--episodes", "1",
                       "--max-steps", "30", "--out", str(tmp_path)]) == 0
    ds = open_dataset(tmp_path)
    ep = ds.load(0)
    assert ds.spec.family == "carracing" and ep.observations.shape == (31, 96, 96, 3)
    assert ep.audio is None and ds.episodes[0].meta["chunk_steps"] == 25  # 50 Hz / action repeat 2


@pytest.mark.parametrize("argv, message", [
    (["--game", "breakoutt"], "unknown game"),
    (["--game", "breakout", "--episodes", "0"], "--episodes must be >= 1"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                               message: str) -> None:
    assert train.main(["collect", "--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")


def test_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert collect(tmp_path / "file" / "d", "--episodes", "1") == 2
    assert "cannot record" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_closes_episodes_cleanly(tmp_path: Path, workers: str) -> None:
    """SIGINT to collect: the episodes in play are closed, nothing is torn or lost."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import warnings

    root = Path(train.__file__).resolve().parent
    out = tmp_path / "d"
    proc = subprocess.Popen(
        # CarRacing: an episode lasts seconds, so the interrupt always lands mid-episode (a
        # scripted Breakout game can end within the 0.2 s between polls, in every worker at once).
        [sys.executable, str(root / "train.py"), "collect", "--game", "carracing", "--policy", "scripted",
         "--episodes", "8", "--max-steps", "5000", "--workers", workers, "--no-audio", "--out", str(out)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(root)})
    deadline = time.monotonic() + 60
    while not list(out.glob("episode-*/steps-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unfinished or damaged episode to report
        ds = open_dataset(out)
    assert all(e.complete for e in ds.episodes)
    assert any(e.meta["extra"].get("stopped") for e in ds.episodes)
    assert all(any(p.iterdir()) for p in out.iterdir())  # unused reserved ids were given back


def test_a_dead_worker_ends_collect_with_an_error(tmp_path: Path) -> None:
    """SIGKILL to one worker (as the OOM killer would): collect stops with one error line and a
    non-zero exit instead of waiting forever for the lost episode; finished episodes stay."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(train.__file__).resolve().parent
    out = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, str(root / "train.py"), "collect", "--game", "carracing", "--policy", "scripted",
         "--episodes", "6", "--max-steps", "5000", "--workers", "2", "--no-audio", "--out", str(out)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(root)})

    def workers() -> list[int]:  # the pool's processes, not multiprocessing's resource tracker
        found = []
        for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
        return found

    deadline = time.monotonic() + 60
    while not list(out.glob("episode-*/steps-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(workers()[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "worker process died" in lines[0], output
    with pytest.warns(UserWarning):  # the killed episode is reported as unfinished, and kept
        ds = open_dataset(out)
    assert sum(e.num_steps for e in ds.episodes) > 0


def test_a_hung_worker_ends_collect_after_the_stall_timeout(tmp_path: Path) -> None:
    """Workers that stop answering without dying (SIGSTOP stands in for a hung emulator):
    collect kills them after --stall-timeout and ends with one error line instead of waiting
    forever; what was saved stays readable."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(train.__file__).resolve().parent
    out = tmp_path / "d"
    proc = subprocess.Popen(
        [sys.executable, str(root / "train.py"), "collect", "--game", "carracing", "--policy", "scripted",
         "--episodes", "4", "--max-steps", "5000", "--workers", "2", "--no-audio", "--stall-timeout", "3",
         "--out", str(out)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(root)})
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while not list(out.glob("episode-*/steps-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.2)
    stopped = [int(c) for c in children.read_text().split()
               if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(stopped) == 2
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, output
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no collect worker has played a step for 3 s" in lines[0], output
    for pid in stopped:  # the hung workers were killed, not left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.warns(UserWarning):  # the episodes in play are reported as unfinished, and kept
        ds = open_dataset(out)
    assert sum(e.num_steps for e in ds.episodes) > 0


def test_stall_timeout_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert collect(tmp_path / "d", "--episodes", "1", "--stall-timeout", "-1") == 2
    assert "--stall-timeout must be >= 0" in capsys.readouterr().err

"""`train.py import` round trip and its errors on malformed npz; `train.py info` output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import train
from engine.dataset import open_dataset
from engine.games import make_simulator


def real_episode(seed: int, steps: int) -> dict[str, np.ndarray]:
    """A short episode of real Breakout as the arrays an npz file holds."""
    sim = make_simulator("breakout", seed=seed, audio=False)
    rng = np.random.default_rng(seed)
    frames = [sim.reset(seed=seed)]
    actions, rewards, terms = [], [], []
    for _ in range(steps):
        a = int(rng.integers(sim.spec.num_actions))
        step = sim.step(a)
        frames.append(step.frame)
        actions.append(a)
        rewards.append(step.reward)
        terms.append(step.terminated)
    truncs = np.zeros(steps, bool)
    truncs[-1] = True
    return {"frames": np.stack(frames), "actions": np.asarray(actions, np.int64),
            "rewards": np.asarray(rewards, np.float64), "terminations": np.asarray(terms),
            "truncations": truncs}


def test_import_round_trip_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    episodes = [real_episode(0, 30), real_episode(1, 45)]
    files = []
    for i, ep in enumerate(episodes):
        files.append(str(tmp_path / f"ep{i}.npz"))
        np.savez_compressed(files[-1], **ep)
    out = tmp_path / "data"
    assert train.main(["import", "--game", "breakout", "--out", str(out), *files]) == 0
    ds = open_dataset(out)
    assert len(ds) == 2 and ds.spec.name == "breakout"
    for i, ep in enumerate(episodes):
        got = ds.load(i)
        np.testing.assert_array_equal(got.observations, ep["frames"])
        np.testing.assert_array_equal(got.actions, ep["actions"])
        np.testing.assert_array_equal(got.rewards, ep["rewards"].astype(np.float32))
        np.testing.assert_array_equal(got.terminations, ep["terminations"])
        np.testing.assert_array_equal(got.truncations, ep["truncations"])
        assert got.audio is None and got.meta["extra"]["source"] == "import"
        assert got.meta["extra"]["file"].endswith(f"ep{i}.npz")
    capsys.readouterr()

    assert train.main(["info", "--data", str(out), "--json", str(tmp_path / "info.json")]) == 0
    text = capsys.readouterr().out
    assert "episodes  2" in text and "steps     75" in text and "returns   mean" in text
    assert "played by import 2" in text
    for meaning in ds.spec.action_meanings:
        assert meaning in text
    summary = json.loads((tmp_path / "info.json").read_text())
    assert summary["steps"] == 75 and sum(summary["actions"].values()) == 75
    rets = [float(e["rewards"].sum()) for e in episodes]
    assert summary["returns"]["max"] == pytest.approx(max(rets))
    assert summary["bytes_on_disk"] > 0 and summary["event_onsets"] == {}


def test_export_import_round_trip_keeps_audio_and_events(tmp_path: Path) -> None:
    from engine.recorder import Recorder
    from engine.simulator import WorldEvent

    rain = WorldEvent("rain", "make it rain")
    sim = make_simulator("breakout", seed=2)
    with Recorder(tmp_path / "rec", sim.spec) as rec:
        for seed, steps in ((2, 70), (3, 10)):
            rec.begin_episode(sim.reset(seed=seed), seed)
            for t in range(steps):
                active = [rain] if 20 <= t < 60 else []
                rec.add(t % sim.spec.num_actions, sim.step(t % sim.spec.num_actions, active), active)
    assert train.main(["export", "--data", str(tmp_path / "rec"), "--out", str(tmp_path / "npz")]) == 0
    files = sorted(str(p) for p in (tmp_path / "npz").glob("*.npz"))
    assert [Path(f).name for f in files] == ["episode-000000.npz", "episode-000001.npz"]
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "back"), *files]) == 0
    a, b = open_dataset(tmp_path / "rec"), open_dataset(tmp_path / "back")
    for i in range(2):
        ea, eb = a.load(i), b.load(i)
        for field in ("observations", "actions", "rewards", "terminations", "truncations", "audio"):
            np.testing.assert_array_equal(getattr(ea, field), getattr(eb, field), err_msg=field)
        assert ea.events == eb.events
    assert a.load(0).events[30] == (("rain", "make it rain"),)
    assert train.main(["export", "--data", str(tmp_path / "rec"), "--out", str(tmp_path / "x"),
                       "--episodes", "5"]) == 2
    mine = tmp_path / "npz" / "episode-000001.npz"
    mine.write_bytes(b"edited by hand")
    assert train.main(["export", "--data", str(tmp_path / "rec"), "--out", str(tmp_path / "npz")]) == 2
    assert mine.read_bytes() == b"edited by hand"  # never replaced


def malformed(tmp_path: Path, name: str, **fields: np.ndarray) -> str:
    good = {"frames": np.zeros((4, 210, 160, 3), np.uint8), "actions": np.zeros(3, np.int32),
            "rewards": np.zeros(3, np.float32), "terminations": np.zeros(3, bool),
            "truncations": np.zeros(3, bool)}
    good.update(fields)
    arrays = {k: v for k, v in good.items() if v is not None}  # type: ignore[comparison-overlap]
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize("name, fields, message", [
    ("nofr", {"frames": None}, "missing field(s) frames"),
    ("short", {"actions": np.zeros(2, np.int32)}, "field actions must have shape (3,)"),
    ("float", {"frames": np.zeros((4, 8, 8, 3), np.float32)}, "field frames must be (T+1, H, W, 3) uint8"),
    ("range", {"actions": np.array([0, 9, 1])}, "field actions holds 9 at step 1"),
    ("obj", {"rewards": np.array([0.0, None, 1.0], dtype=object)}, "unreadable array"),
    ("flag", {"terminations": np.array([0, 2, 0])}, "field terminations must be bool"),
    ("audio", {"audio": np.zeros((2, 8), np.uint8)}, "field audio must be (3, S) uint8"),
    ("events", {"events": np.array(["", "rain", ""])}, "field events at step 1 is not a JSON list"),
])
def test_import_rejects_malformed_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                      fields: dict, message: str) -> None:
    path = malformed(tmp_path, name, **fields)
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "d"), path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and path in err and message in err
    assert "\n" not in err
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


def test_import_not_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "d"), str(bad),
                       str(tmp_path / "missing.npz")]) == 2
    assert "bad.npz: not a readable npz file" in capsys.readouterr().err


def test_info_on_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train.main(["info", "--data", str(tmp_path / "nothing")]) == 2
    assert "no dataset" in capsys.readouterr().err

"""Recorder -> reader round trips on the real Breakout emulator, crash safety, damaged chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from engine.dataset import (
    DatasetWarning,
    Recorder,
    open_dataset,
    reserve_episode_ids,
)
from engine.errors import UserError
from engine.games import make_simulator
from engine.simulator import WorldEvent

RAIN = WorldEvent("rain", "make it rain")
NIGHT = WorldEvent("night", "night falls 🌙\n\x00 «vite»")


def play(root: Path, steps: int, seed: int, *, game: str = "breakout", chunk_steps: int | None = None,
         events: bool = False) -> dict[str, list]:
    """Play `steps` random steps of the real game, recording them; return what was played."""
    sim = make_simulator(game, seed=seed)
    rng = np.random.default_rng(seed)
    played: dict[str, list] = {"frames": [], "actions": [], "rewards": [], "term": [], "audio": [],
                               "events": []}
    with Recorder(root, sim.spec, chunk_steps=chunk_steps, extra_meta={"who": "test"}) as rec:
        frame = sim.reset(seed=seed)
        rec.begin_episode(frame, seed)
        played["frames"].append(frame.copy())
        for t in range(steps):
            action = int(rng.integers(sim.spec.num_actions))
            active = ([RAIN] if 20 <= t < 60 else []) + ([NIGHT] if 40 <= t < 80 else []) if events else []
            step = sim.step(action, active)
            rec.add(action, step, active)
            played["frames"].append(step.frame.copy())
            played["actions"].append(action)
            played["rewards"].append(step.reward)
            played["term"].append(step.terminated)
            played["audio"].append(None if step.audio is None else step.audio.copy())
            played["events"].append(tuple((e.name, e.prompt) for e in active))
            if step.terminated or step.truncated:
                break
    sim.close()
    return played


def test_round_trip_equals_what_was_played(tmp_path: Path) -> None:
    played = play(tmp_path, 100, seed=1, events=True)
    ds = open_dataset(tmp_path)
    assert ds.spec.name == "breakout" and len(ds) == 1
    info = ds.episodes[0]
    assert info.complete and info.num_steps == len(played["actions"])
    ep = ds.load(0)
    np.testing.assert_array_equal(ep.observations, np.stack(played["frames"]))
    np.testing.assert_array_equal(ep.actions, played["actions"])
    np.testing.assert_array_equal(ep.rewards, np.asarray(played["rewards"], np.float32))
    np.testing.assert_array_equal(ep.terminations, played["term"])
    assert ep.audio is not None and ep.audio.shape == (ep.num_steps, 4 * 512)
    np.testing.assert_array_equal(ep.audio, np.stack(played["audio"]))
    assert ep.events == played["events"]
    assert ep.events[50] == (("rain", "make it rain"), ("night", NIGHT.prompt))
    meta = ep.meta
    assert meta["seed"] == 1 and meta["frameskip"] == 4 and meta["complete"]
    assert meta["action_meanings"] == list(ds.spec.action_meanings)
    assert meta["extra"] == {"who": "test"} and meta["end_unix"] >= meta["start_unix"]
    obs, actions = ds.load_frames(0)
    np.testing.assert_array_equal(obs, ep.observations)
    np.testing.assert_array_equal(actions, ep.actions)


def test_sessions_append_as_new_ordered_episodes(tmp_path: Path) -> None:
    play(tmp_path, 20, seed=1)
    play(tmp_path, 30, seed=2)
    ds = open_dataset(tmp_path)
    assert [e.id for e in ds.episodes] == [0, 1]
    assert [e.meta["seed"] for e in ds.episodes] == [1, 2]
    assert reserve_episode_ids(tmp_path, 3) == [2, 3, 4]


def test_numpy_alone_reads_it(tmp_path: Path) -> None:
    """The recipe of docs/DATASET.md: np.load + json, no project code."""
    played = play(tmp_path, 40, seed=4)
    ep = tmp_path / "episode-000000"
    meta = json.loads((ep / "meta.json").read_text())
    first = np.load(ep / "start.npz")["observation"][None]
    chunks = [np.load(p) for p in sorted(ep.glob("steps-*.npz"))]
    obs = np.concatenate([first] + [c["observations"] for c in chunks])
    np.testing.assert_array_equal(obs, np.stack(played["frames"]))
    assert meta["game"] == "breakout" and len(chunks) == 3  # 40 steps in chunks of 15


def test_corrupt_chunk_is_skipped_with_one_warning(tmp_path: Path) -> None:
    played = play(tmp_path, 60, seed=5)
    victim = tmp_path / "episode-000000" / "steps-00000015-00000030.npz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    victim.write_bytes(bytes(data))
    ds = open_dataset(tmp_path)
    with pytest.warns(DatasetWarning, match="steps-00000015-00000030.npz") as caught:
        ep = ds.load(0)
    assert len([w for w in caught if issubclass(w.category, DatasetWarning)]) == 1
    assert ep.num_steps == 15 and ds.episodes[0].num_steps == 15
    np.testing.assert_array_equal(ep.observations, np.stack(played["frames"][:16]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds.load(0).num_steps == 15  # reported once, not on every load


def test_truncated_chunk_file_and_missing_meta(tmp_path: Path) -> None:
    play(tmp_path, 30, seed=6)
    (tmp_path / "episode-000001").mkdir()  # reserved id that never started: ignored silently
    victim = tmp_path / "episode-000000" / "steps-00000000-00000015.npz"
    victim.write_bytes(victim.read_bytes()[:100])
    ds = open_dataset(tmp_path)
    with pytest.warns(DatasetWarning, match="steps-00000000-00000015"):
        assert ds.load(0).num_steps == 0


def test_bad_roots(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot record"):
        Recorder(blocker / "sub", make_simulator("breakout").spec)
    with pytest.raises(UserError, match="no dataset"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no readable episodes"):
        open_dataset(tmp_path / "empty")


def test_one_game_per_root(tmp_path: Path) -> None:
    play(tmp_path / "a", 5, seed=0)
    with pytest.raises(UserError, match="already holds breakout, frameskip 4, 210x160 episodes"):
        Recorder(tmp_path / "a", make_simulator("pong").spec)
    rec = Recorder(tmp_path / "a", make_simulator("breakout").spec)
    with pytest.raises(UserError, match="holds 210x160 frames and this game shows 64x64"):
        rec.begin_episode(np.zeros((64, 64, 3), np.uint8), 0)
    play(tmp_path / "b", 5, seed=0, game="pong")
    os.rename(tmp_path / "b" / "episode-000000", tmp_path / "a" / "episode-000007")
    with pytest.raises(UserError, match="mixes games"):
        open_dataset(tmp_path / "a")


KILLED_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from engine.dataset import Recorder
    from engine.games import make_simulator
    sim = make_simulator("breakout", seed=3)
    rec = Recorder(sys.argv[1], sim.spec)
    rec.begin_episode(sim.reset(seed=3), 3)
    rng = np.random.default_rng(3)
    t = 0
    while True:
        # FIRE only first: once the ball is lost it waits, so the episode never ends.
        action = 1 if t == 0 else int(rng.choice([0, 2, 3]))
        rec.add(action, sim.step(action))
        t += 1
        print(t, flush=True)
""")


def test_sigkill_mid_episode_keeps_all_but_the_last_second(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    played = 0
    for line in proc.stdout:
        played = int(line)
        if played >= 100:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.warns(DatasetWarning, match="unfinished") as caught:
        ds = open_dataset(tmp_path)
        ep = ds.load(0)
    assert len(caught) == 1
    assert not ds.episodes[0].complete
    assert ep.num_steps >= played - 15  # at most one second (15 steps) lost
    # What was read back is exactly what was played: replay the same seed and actions.
    sim = make_simulator("breakout", seed=3)
    np.testing.assert_array_equal(ep.observations[0], sim.reset(seed=3))
    for t, action in enumerate(ep.actions):
        np.testing.assert_array_equal(ep.observations[t + 1], sim.step(int(action)).frame)
    # A half-written temp file of the dead writer is swept by the next recorder on this root.
    stale = tmp_path / "episode-000000" / f".steps-00000120-00000135.npz.{proc.pid}.tmp"
    stale.write_bytes(b"half a chunk")
    Recorder(tmp_path, sim.spec)
    assert not stale.exists() and not list(tmp_path.glob("episode-*/.*.tmp"))


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy-only example in docs/DATASET.md works on a real recording."""
    import re

    play(tmp_path / "data" / "breakout", 20, seed=8, events=True)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "DATASET.md").read_text()
    match = re.search(r"```python\n(.*?)```", doc, re.S)
    assert match is not None
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(match.group(1), scope)
    assert scope["observations"].shape == (21, 210, 160, 3) and len(scope["events"]) == 20


@pytest.mark.parametrize("backend", ["zlib", "isal.isal_zlib", "zlib_ng.zlib_ng"])
def test_chunk_files_are_standard_npz(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever deflate writes them, chunks are plain zips that np.load and zipfile verify."""
    import io
    import zipfile

    import engine.files as files

    monkeypatch.setattr(files, "DEFLATE", pytest.importorskip(backend))
    rng = np.random.default_rng(0)
    arrays = {"observations": rng.integers(0, 4, (15, 210, 160, 3), dtype=np.uint8),
              "actions": np.arange(15, dtype=np.int32), "terminations": np.zeros(15, bool),
              "events": np.array(["", '[["rain", "il pleut à verse"]]'] * 7 + [""]),
              "empty": np.zeros((0, 2048), np.uint8)}
    data = files.npz_bytes(arrays)
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for k, v in arrays.items():
            assert npz[k].dtype == v.dtype and npz[k].shape == v.shape
            np.testing.assert_array_equal(npz[k], v)
    with pytest.raises(ValueError, match="pickle"):
        files.npz_bytes({"bad": np.array([None, 1], dtype=object)})


def test_recorder_copies_reused_buffers(tmp_path: Path) -> None:
    """A simulator that refills one frame/audio buffer each step is still recorded exactly."""
    from engine.simulator import Step

    spec = make_simulator("breakout").spec
    frame, audio = np.zeros((210, 160, 3), np.uint8), np.zeros(2048, np.uint8)
    with Recorder(tmp_path, spec) as rec:
        rec.begin_episode(frame, 0)
        for t in range(20):
            frame[:] = t
            audio[:] = t
            rec.add(0, Step(frame, 0.0, False, False, audio))
    ep = open_dataset(tmp_path).load(0)
    assert [int(o[0, 0, 0]) for o in ep.observations] == [0, *range(20)]
    assert ep.audio is not None and list(ep.audio[:, 0]) == list(range(20))


def test_damaged_start_frame_drops_one_step(tmp_path: Path) -> None:
    played = play(tmp_path, 20, seed=9)
    (tmp_path / "episode-000000" / "start.npz").write_bytes(b"PK garbage")
    ds = open_dataset(tmp_path)
    with pytest.warns(DatasetWarning, match="start.npz"):
        ep = ds.load(0)
    assert ep.num_steps == 19 and ep.observations.shape[0] == 20
    np.testing.assert_array_equal(ep.observations, np.stack(played["frames"][1:]))
    np.testing.assert_array_equal(ep.actions, played["actions"][1:])


def test_write_failure_is_a_user_error_and_leaves_no_temp_file(tmp_path: Path) -> None:
    from engine.files import write_atomic

    target = tmp_path / "gone" / "x.npz"  # parent directory missing: open() fails
    with pytest.raises(UserError, match="cannot write"):
        write_atomic(target, b"data")
    (tmp_path / "dir.npz").mkdir()  # rename onto a directory fails after the temp file exists
    with pytest.raises(UserError, match="cannot write"):
        write_atomic(tmp_path / "dir.npz", b"data")
    assert not list(tmp_path.glob(".*.tmp"))


def test_ctrl_c_as_an_episode_ends_leaves_it_for_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt while `end_episode` writes the closing meta.json (the game ends as
    Ctrl+C lands) keeps the episode open, and `close()` (the frame loop's `finally`) completes it."""
    import engine.recorder as recorder
    from engine.simulator import Step

    spec = make_simulator("breakout").spec
    frame = np.zeros((210, 160, 3), np.uint8)
    real_write = recorder.write_atomic
    interrupted: list[Path] = []

    def write_once_interrupted(path: Path, data: bytes, **kw: object) -> None:
        if path.name == "meta.json" and b'"complete": true' in data and not interrupted:
            interrupted.append(path)
            raise KeyboardInterrupt
        real_write(path, data, **kw)  # type: ignore[arg-type]

    rec = Recorder(tmp_path, spec)
    rec.begin_episode(frame, 0)
    for _ in range(7):
        rec.add(0, Step(frame, 0.0, False, False, None))
    monkeypatch.setattr(recorder, "write_atomic", write_once_interrupted)
    with pytest.raises(KeyboardInterrupt):
        rec.end_episode()
    assert interrupted and rec.recording
    rec.close()
    ep = open_dataset(tmp_path).load(0)
    assert ep.meta["complete"] and ep.num_steps == 7

"""Bad input through the real CLIs: one `error:`/`warning:` line, the right exit code, nothing lost.

Cases found by auditing issues 2-4 end to end; each fixed path gets a cheap check here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from engine.dataset import open_dataset
from engine.errors import UserError
from models.config import ConfigError, apply_overrides, from_dict
from models.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
STEPS = 40


def _episode_npz(path: Path, steps: int = STEPS) -> Path:
    """An importable Breakout-action episode whose frame t is filled with the value t."""
    frames = np.repeat(np.arange(steps + 1, dtype=np.uint8), 64 * 64 * 3).reshape(steps + 1, 64, 64, 3)
    np.savez(path, frames=frames, actions=np.arange(steps) % 4, rewards=np.zeros(steps),
             terminations=np.zeros(steps, bool), truncations=np.zeros(steps, bool))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qa")
    files = [str(_episode_npz(root / f"ep{i}.npz")) for i in range(2)]
    assert train.main(["import", "--game", "breakout", "--out", str(root / "data"), *files]) == 0
    return root / "data"


def _cli(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, text=True, stdout=stdout,
                          stderr=subprocess.PIPE, timeout=120)


def test_closed_stdout_is_not_a_traceback(data: Path) -> None:
    """`train.py info | head` and `play.py --list-games | head`: the reader leaving is no crash."""
    for args in (["train.py", "info", "--data", str(data)], ["play.py", "--list-games"]):
        r, w = os.pipe()
        os.close(r)  # the reader is gone before the first line is written
        try:
            proc = subprocess.run([sys.executable, *args], cwd=ROOT, stdout=w, stderr=subprocess.PIPE,
                                  text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
        finally:
            os.close(w)
        assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
        assert proc.returncode == 141


def test_every_script_answers_a_mistyped_flag_in_one_line() -> None:
    """Benchmarks and helper scripts parse their flags like play.py and train.py do."""
    scripts = sorted(p.relative_to(ROOT) for d in ("benchmarks", "scripts") for p in (ROOT / d).glob("*.py"))
    assert len(scripts) >= 9
    for script in scripts:
        proc = _cli(str(script), "--no-such-flag")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (script, proc.stderr)


def test_unknown_game_is_one_line_without_the_emulator_banner() -> None:
    proc = _cli("play.py", "--game", "breakot", "--real", "--headless", "--max-steps", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: unknown game 'breakot'; did you mean breakout?"]


def test_damaged_chunk_warns_once_in_one_line(tmp_path: Path, data: Path) -> None:
    copy = tmp_path / "data"
    for f in data.rglob("*"):
        if f.is_file() and ".cache" not in f.parts:
            (copy / f.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
            (copy / f.relative_to(data)).write_bytes(f.read_bytes())
    chunk = sorted((copy / "episode-000000").glob("steps-*.npz"))[1]
    chunk.write_bytes(chunk.read_bytes()[:300])
    proc = _cli("train.py", "info", "--data", str(copy))
    assert proc.returncode == 0
    assert [ln for ln in proc.stderr.splitlines() if ln.strip()] == [
        f"warning: skipping unreadable chunk {chunk} (BadZipFile: File is not a zip file); "
        f"dropped steps 15..{STEPS} of episode 0"]
    assert f"steps     {15 + STEPS} " in proc.stdout  # the rest is read


def test_a_spurious_ast_error_while_threads_read_drops_no_chunk(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11 can raise "AST constructor recursion depth mismatch" from the .npy header parse
    when loader threads read at once: the chunk is read again, not dropped with a warning."""
    import engine.dataset as dataset_mod

    real, calls = dataset_mod._load_fields, []

    def flaky(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
        calls.append(path)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=42, after=44)")
        return real(path, fields)

    monkeypatch.setattr(dataset_mod, "_load_fields", flaky)
    ds = open_dataset(data)
    steps = ds.episodes[0].num_steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "skipping unreadable chunk"
        cols = ds.read(0, ("actions",))
    assert len(cols["actions"]) == steps == ds.episodes[0].num_steps and calls[0] == calls[1]


@pytest.mark.parametrize("content, words", [
    (b"PK\x03\x04 truncated download", "not a readable npz file (BadZipFile"),
    (b"plain text", "not a readable npz file (not an npz archive)"),
    (None, "is a directory, expected an npz file"),
])
def test_import_of_unreadable_files(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str],
                                    content: bytes | None, words: str) -> None:
    bad = tmp_path / "bad.npz"
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)
    before = open_dataset(data).num_steps
    assert train.main(["import", "--game", "breakout", "--out", str(data), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0]
    assert open_dataset(data).num_steps == before  # nothing recorded is lost


def test_record_into_a_file_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "afile"
    target.write_text("keep me")
    npz = _episode_npz(tmp_path / "ep.npz", 3)
    assert train.main(["import", "--game", "breakout", "--out", str(target), str(npz)]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot record into {target}: it is a file, not a directory"
    assert target.read_text() == "keep me"


def test_config_values_are_checked_against_their_types() -> None:
    with pytest.raises(ConfigError, match=r"^train\.lr must be a number, got 'abc'$"):
        from_dict(TrainConfig, {"lr": "abc"}, "train.")
    assert from_dict(TrainConfig, {"lr": "1e-4"}, "train.").lr == pytest.approx(1e-4)  # yaml's string
    with pytest.raises(ConfigError, match="train.steps must be an integer"):
        from_dict(TrainConfig, {"steps": 2.5}, "train.")
    with pytest.raises(ConfigError, match="train.bf16 must be true or false"):
        from_dict(TrainConfig, {"bf16": "maybe"}, "train.")
    with pytest.raises(ConfigError, match=r"train.stage_steps\[1\] must be an integer"):
        from_dict(TrainConfig, {"stage_steps": [1, "x"]}, "train.")
    assert from_dict(TrainConfig, {"stages": ["a", "b"]}, "train.").stages == ("a", "b")
    with pytest.raises(ConfigError, match="'model' is a config section, not a value"):
        apply_overrides({"model": {"resolution": 64}}, ["model=3"])


def test_fit_with_a_mistyped_value_is_one_line(tmp_path: Path, data: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code = train.main(["fit", "--config", str(ROOT / "assets/configs/breakout-diffusion.yaml"),
                       "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
                       "--set", "preset=tiny", "--set", "train.lr=abc", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: train.lr must be a number, got 'abc'"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the GPU-less answers")
@pytest.mark.parametrize("name, words", [("cuda:1", "no CUDA GPU is available"), ("tpu", "unknown device 'tpu'")])
def test_fit_and_eval_devices(name: str, words: str) -> None:
    from models.commands.fit import pick_device

    with pytest.raises(UserError, match=words):
        pick_device(name)
    assert pick_device("cpu") == torch.device("cpu")


def _drop_member(chunk: Path, member: str) -> None:
    """Rewrite a chunk without one of its arrays (its other fields stay readable)."""
    with np.load(chunk, allow_pickle=False) as npz:
        kept = {k: npz[k] for k in npz.files if k != member}
    with zipfile.ZipFile(chunk, "w") as zf:
        for k, v in kept.items():
            with zf.open(f"{k}.npy", "w") as fh:
                np.lib.format.write_array(fh, v, allow_pickle=False)


def test_training_windows_stay_aligned_when_frames_are_damaged(tmp_path: Path) -> None:
    """Frames of one chunk unreadable (its actions fine) and a torn start frame: frames, actions
    and rewards still line up step for step, also when the cache is reused."""
    from models.data import Recordings

    npz = _episode_npz(tmp_path / "ep.npz")
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "d"), str(npz)]) == 0
    episode = tmp_path / "d" / "episode-000000"
    _drop_member(sorted(episode.glob("steps-*.npz"))[2], "observations")  # steps 30..40
    (episode / "start.npz").write_bytes(b"torn")
    for _ in range(2):  # build the cache, then read it back
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs = Recordings(open_dataset(tmp_path / "d"), 64, [], progress=False)
        ep = recs.episodes[0]
        frames = np.asarray(ep.frames)[:, 0, 0, 0]  # frame value == its step index
        assert frames.tolist() == list(range(1, 31))  # steps 1..29 and the frame after the last
        assert ep.actions.tolist() == [t % 4 for t in range(1, 30)]
        assert ep.num_steps == len(frames) - 1


def test_a_damaged_frame_cache_is_built_again(tmp_path: Path) -> None:
    """A cache file cut short (a full disk, a copy that stopped) whose signature still matches:
    the frames are read from the recording again instead of failing on the memory map."""
    from models.data import Recordings

    npz = _episode_npz(tmp_path / "ep.npz")
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "d"), str(npz)]) == 0
    first = np.array(Recordings(open_dataset(tmp_path / "d"), 64, [], progress=False).episodes[0].frames)  # a copy
    cached = next((tmp_path / "d" / ".cache" / "64").glob("episode-*.npy"))
    with open(cached, "r+b") as fh:
        fh.truncate(1000)
    again = Recordings(open_dataset(tmp_path / "d"), 64, [], progress=False).episodes[0].frames
    np.testing.assert_array_equal(np.asarray(again), first)
    assert cached.stat().st_size > 1000


def test_prompts_fold_compatibility_forms_and_drop_lone_surrogates() -> None:
    from models.text import clean_prompt

    assert clean_prompt("ｍａｋｅ ｉｔ ｒａｉｎ") == ("make it rain", False)
    assert clean_prompt("\ud800make it rain\udfff") == ("make it rain", False)


def test_negative_seed_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import play

    assert play.main(["--real", "--headless", "--max-steps", "2", "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --seed must be in 0..2**32-1, got -1"
    out = tmp_path / "c"
    assert train.main(["collect", "--game", "breakout", "--policy", "random", "--episodes", "1",
                       "--out", str(out), "--seed", "-1"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --seed must be in 0..")
    assert not out.exists()


@pytest.mark.parametrize("override, words", [
    ("train.lr=-1", "train.lr must be a positive number"), ("train.lr=nan", "train.lr must be a positive number"),
    ("model.context_frames=0", "model.context_frames must be >= 1"),
    ("model.unet.cond_dim=0", "model.unet.channels, cond_dim"), ("train.ema_decay=1", "train.ema_decay")])
def test_fit_with_a_value_out_of_range_is_one_line_and_leaves_no_run_dir(
        tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], override: str, words: str) -> None:
    code = train.main(["fit", "--config", str(ROOT / "assets/configs/breakout-diffusion.yaml"),
                       "--data", str(data), "--out", str(tmp_path / "run"), "--device", "cpu",
                       "--set", "preset=tiny", "--set", override, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_json_report_path_is_checked_before_the_work(tmp_path: Path, data: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import play

    assert play.main(["--real", "--headless", "--max-steps", "2", "--json", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: cannot write {tmp_path}: it is a directory"
    assert train.main(["info", "--data", str(data), "--json", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == f"error: cannot write {tmp_path}: it is a directory" and not captured.out
    report = tmp_path / "new" / "info.json"
    assert train.main(["info", "--data", str(data), "--json", str(report)]) == 0
    assert '"steps"' in report.read_text()


def test_fit_out_and_config_that_cannot_be_used(tmp_path: Path, data: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "assets/configs/breakout-diffusion.yaml")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    common = ["--data", str(data), "--device", "cpu", "--set", "preset=tiny", "--no-progress"]
    assert train.main(["fit", "--config", config, "--out", str(afile), *common]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {afile} is a file, not a run directory"
    assert afile.read_text() == "keep me"
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"\x93NUMPY\xad\x00\xff")
    assert train.main(["fit", "--config", str(binary), "--out", str(tmp_path / "run"), *common]) == 2
    assert capsys.readouterr().err.strip() == f"error: {binary} is not a readable yaml text file (UnicodeDecodeError)"


def test_hand_edited_meta_skips_that_episode_only(tmp_path: Path) -> None:
    import json

    from engine.dataset import DatasetWarning

    files = [str(_episode_npz(tmp_path / f"ep{i}.npz", 5)) for i in range(2)]
    assert train.main(["import", "--game", "breakout", "--out", str(tmp_path / "d"), *files]) == 0
    meta_path = tmp_path / "d" / "episode-000001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = "abc"
    meta_path.write_text(json.dumps(meta))
    with pytest.warns(DatasetWarning, match="episode-000001: no readable meta.json, skipped"):
        ds = open_dataset(tmp_path / "d")
    assert [e.id for e in ds.episodes] == [0] and ds.num_steps == 5


def test_screenshot_that_cannot_be_saved_does_not_end_play(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import pygame

    from engine.controls import InputState
    from engine.display import Display, DisplayConfig
    from engine.games import make_simulator
    from engine.keymap import Keymap, pygame_key_names
    from engine.loop import FrameLoop, LoopConfig

    blocker = tmp_path / "shots"
    blocker.write_text("a file where the screenshot directory should be")
    sim = make_simulator("breakout", audio=False)
    display = Display(DisplayConfig(scale=1), (210, 160))
    loop = FrameLoop(sim, LoopConfig(max_steps=12, seed=0, paced=False, screenshot_dir=str(blocker)),
                     display=display, controls=InputState(pygame_key_names()), keymap=Keymap.for_spec(sim.spec))

    def script(i: int, _loop: FrameLoop) -> None:
        if i == 2:
            for kind in (pygame.KEYDOWN, pygame.KEYUP):
                pygame.event.post(pygame.event.Event(kind, key=pygame.K_F12, mod=0, unicode="", scancode=0))

    loop.on_frame = lambda i: script(i, loop)
    try:
        summary = loop.run()
    finally:
        display.close()
        sim.close()
    assert summary.steps == 12
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: screenshot not saved (")


def test_no_display_is_one_error_line() -> None:
    """`python play.py` on a machine with no X/Wayland display and no chosen SDL driver must not
    play on in an invisible offscreen window: one error line pointing at --headless, exit 2."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "play.py", "--real", "--max-steps", "5"], cwd=ROOT,
                          env=env, text=True, capture_output=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--headless" in errors[0], proc.stderr


@pytest.mark.parametrize("argv, words", [
    (["collect", "--game", "breakout", "--out", "x", "--stall-timeout", "abc"], "invalid float value: 'abc'"),
    (["nosuch"], "invalid choice: 'nosuch'")])
def test_a_mistyped_flag_is_one_error_line(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        train.main(argv)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and err.startswith("error: train.py") and words in err
    assert len(err.splitlines()) == 1 and err.endswith("--help)")

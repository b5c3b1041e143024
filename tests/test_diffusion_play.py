"""A tiny diffusion run saved to disk, played through NeuralSimulator, the bench CLI and play.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.games import make_simulator
from engine.simulator import Simulator, WorldEvent
from models.checkpoint import save_run
from models.config import resolve_config
from models.diffusion_world import DiffusionWorldModel
from models.neural_sim import NeuralSimulator, open_neural_simulator, resolve_device
from models.world import EVENT_DIM, Batch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "assets/configs/breakout-diffusion.yaml"


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(EVENT_DIM).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train the tiny preset 30 steps on real Breakout frames (half with a "rain" event), save it."""
    real = make_simulator("breakout", audio=False, seed=0)
    rng = np.random.default_rng(0)
    frames, actions, rewards = [real.reset(0)], [], []
    for _ in range(48):
        act = int(rng.integers(real.spec.num_actions))
        st = real.step(act)
        frames.append(st.frame)
        actions.append(act)
        rewards.append(st.reward)
    real.close()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(64, 64), mode="area").round()  # (N+1, 3, 64, 64) in 0..255
    act_t, rew_t = torch.tensor(actions), torch.tensor(rewards, dtype=torch.float32)

    config = resolve_config(CONFIG, ["preset=tiny"])
    torch.manual_seed(0)
    model = DiffusionWorldModel.from_config(config, real.spec)
    t = model.train_window
    starts = list(range(len(actions) - t))
    events = torch.zeros(len(starts), t, EVENT_DIM)
    events[::2] = torch.from_numpy(unit(1))
    batch = Batch(frames=torch.stack([x[s:s + t + 1] for s in starts]) / 127.5 - 1,
                  actions=torch.stack([act_t[s:s + t] for s in starts]),
                  rewards=torch.stack([rew_t[s:s + t] for s in starts]),
                  terminations=torch.zeros(len(starts), t), events=events,
                  valid=torch.ones(len(starts), t + 1, dtype=torch.bool))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(30):
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    c = model.context_frames
    start_frames = torch.stack([x[s:s + c] for s in (0, 10, 20)]).to(torch.uint8)  # (3, C, 3, 64, 64)
    start_actions = torch.stack([act_t[s:s + c - 1] for s in (0, 10, 20)])
    out = tmp_path_factory.mktemp("run") / "bk"
    save_run(out, ema_model=model, config=config, spec=real.spec, start_frames=start_frames,
             start_actions=start_actions, event_bank={"rain": unit(1)}, stats={"step": 30})
    return out


def test_events_the_training_data_never_showed_are_not_offered(run_dir: Path, tmp_path: Path) -> None:
    """The run's config lists the events its training data held (events.trained): play offers
    only those, so the console says "not trained with it" instead of pretending."""
    import shutil

    import yaml

    copy = tmp_path / "bk"
    shutil.copytree(run_dir, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    for trained, names in (([], ()), (["rain", "snow"], ("rain",))):
        config["events"] = {"names": ["rain"], "trained": trained}
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
        sim = open_neural_simulator(copy, device="cpu")
        assert sim.event_names == names and sim.events_supported == bool(names)
        sim.close()


def play(sim: NeuralSimulator, seed: int, steps: int, events: tuple[WorldEvent, ...] = ()) -> list[np.ndarray]:
    frames = [sim.reset(seed)]
    for i in range(steps):
        frames.append(sim.step(i % sim.spec.num_actions, events).frame)
    return frames


def test_neural_simulator_plays(run_dir: Path) -> None:
    sim = open_neural_simulator(run_dir, device="cpu")
    assert isinstance(sim, Simulator)
    assert sim.sampler_presets == ("fast", "balanced", "quality") and sim.sampler == "fast"
    assert sim.events_supported and sim.event_names == ("rain",)
    assert "diffusion" in sim.model_name
    first = sim.reset(3)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    st = sim.step(1)
    assert st.frame.shape == (64, 64, 3) and st.frame.dtype == np.uint8
    assert st.reward in (-1.0, 0.0, 1.0) and isinstance(st.terminated, bool) and not st.truncated
    assert st.info["ms"] > 0
    for name in sim.sampler_presets:  # every preset plays, past the context length
        sim.set_sampler(name)
        assert sim.sampler == name
        assert len(play(sim, 0, 6)) == 7
    with pytest.raises(UserError, match="turbo"):
        sim.set_sampler("turbo")
    with pytest.raises(UserError, match="out of range"):
        sim.step(9)


def test_seeded_play_is_deterministic(run_dir: Path) -> None:
    sim = open_neural_simulator(run_dir, device="cpu", sampler="balanced")
    a, b, c = play(sim, 5, 5), play(sim, 5, 5), play(sim, 6, 5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a[1:], c[1:]))


def test_events(run_dir: Path) -> None:
    sim = open_neural_simulator(run_dir, device="cpu")
    vec = sim.event_vector([WorldEvent("rain")])  # no embedding: the run's bank vector
    assert torch.allclose(vec[0], torch.from_numpy(unit(1)))
    assert sim.event_vector([WorldEvent("snow", embedding=unit(2))]).abs().sum() == 0  # untrained
    two = sim.event_vector([WorldEvent("rain", embedding=2 * unit(3)), WorldEvent("rain")])
    assert torch.allclose(two[0], torch.from_numpy(unit(3) + unit(1)), atol=1e-6)
    plain = play(sim, 1, 3)
    unknown = play(sim, 1, 3, (WorldEvent("snow"),))
    rain = play(sim, 1, 3, (WorldEvent("rain"),))
    assert all(np.array_equal(x, y) for x, y in zip(plain, unknown))
    assert not all(np.array_equal(x, y) for x, y in zip(plain[1:], rain[1:]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_device_errors(run_dir: Path) -> None:
    with pytest.raises(UserError, match="no CUDA GPU"):
        open_neural_simulator(run_dir, device="cuda")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_device("auto", quiet=True).type == "cpu"
    with pytest.raises(UserError, match="not found"):
        open_neural_simulator(run_dir.parent / "missing", device="cpu")


def test_bench_cli_writes_json(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "bench", "--checkpoint", str(run_dir),
                           "--device", "cpu", "--frames", "5", "--warmup", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu") and result["params"] > 0
    for name in ("fast", "balanced", "quality"):
        assert set(result[name]) >= {"p50_ms", "p99_ms", "fps", "peak_mem_mb"}
        assert result[name]["fps"] > 0
    bad = subprocess.run([sys.executable, str(ROOT / "train.py"), "bench", "--checkpoint",
                          str(tmp_path / "nope")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")
    for extra, words in ((["--json", str(tmp_path)], "it is a directory"), (["--threads", "-1"], "--threads")):
        bad = subprocess.run([sys.executable, str(ROOT / "train.py"), "bench", "--checkpoint", str(run_dir),
                              "--device", "cpu", "--frames", "2", *extra],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        # refused before the benchmark runs, so no figures are printed and then lost
        assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and words in bad.stderr
        assert "preset" not in bad.stdout, bad.stdout


def test_headless_neural_play(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "play.json"
    proc = subprocess.run([sys.executable, str(ROOT / "play.py"), "--checkpoint", str(run_dir), "--headless",
                           "--max-steps", "20", "--autopilot", "random", "--device", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["steps"] == 20


def test_recorded_neural_play_is_marked_as_the_model_s(run_dir: Path, tmp_path: Path) -> None:
    """A model's frames must never pass for the real game's in a dataset."""
    proc = subprocess.run([sys.executable, str(ROOT / "play.py"), "--checkpoint", str(run_dir), "--headless",
                           "--max-steps", "6", "--autopilot", "random", "--device", "cpu", "--no-audio",
                           "--record", str(tmp_path / "rec")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    from engine.dataset import open_dataset

    ds = open_dataset(tmp_path / "rec")
    assert ds.episodes[0].meta["extra"]["source"] == "neural"
    assert ds.episodes[0].meta["extra"]["checkpoint"]
    info = subprocess.run([sys.executable, str(ROOT / "train.py"), "info", "--data", str(tmp_path / "rec")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "played by neural 1" in info.stdout, info.stdout
    fit = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", "--config", str(CONFIG), "--data",
                          str(tmp_path / "rec"), "--out", str(tmp_path / "run"), "--set", "preset=tiny",
                          "--device", "cpu", "--steps", "1", "--no-progress"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "1 of the 1 episodes" in fit.stderr and "played by a world model" in fit.stderr, fit.stderr


@pytest.mark.skipif(shutil.which("c++") is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_step_plays_like_the_eager_one(run_dir: Path, tmp_path: Path) -> None:
    eager = open_neural_simulator(run_dir, device="cpu", sampler="balanced")
    fused = open_neural_simulator(run_dir, device="cpu", sampler="balanced")
    fused.use_compile([fused.sampler])  # what play.py --compile does
    assert fused.model.compiled_presets == ("balanced",)  # the other presets stay eager
    assert fused.warm_up() > 0
    a, b = play(eager, 4, 3), play(fused, 4, 3)
    assert max(int(np.abs(x.astype(int) - y).max()) for x, y in zip(a, b)) <= 2  # float rounding only
    fused.set_sampler("fast")
    assert fused.model._step_fn() == fused.model.generate
    out = tmp_path / "play.json"
    proc = subprocess.run([sys.executable, str(ROOT / "play.py"), "--checkpoint", str(run_dir), "--headless",
                           "--max-steps", "3", "--device", "cpu", "--compile", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "compiled in" in proc.stderr and json.loads(out.read_text())["steps"] == 3
    real = subprocess.run([sys.executable, str(ROOT / "play.py"), "--real", "--compile", "--headless"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert real.returncode == 2 and real.stderr.strip().splitlines() == [
        "error: --compile speeds up a world model; the real game has none"]

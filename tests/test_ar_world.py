"""Autoregressive world model end to end: staged losses fall, fit -> eval / bench / headless play,
tokenizer reuse and its refusals, in-place rollout state."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import train
from engine.dataset import Recorder
from engine.errors import UserError
from engine.games import find_game, make_simulator
from models.ar_world import ARWorldModel
from models.checkpoint import load_run
from models.config import ConfigError, resolve_config
from models.neural_sim import open_neural_simulator
from models.world import EVENT_DIM, Batch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "assets/configs/breakout-autoregressive.yaml")
TINY = ["--set", "preset=tiny", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 40-step episodes of real Breakout under random play."""
    root = tmp_path_factory.mktemp("bk")
    sim = make_simulator("breakout", audio=False)
    rng = np.random.default_rng(0)
    with Recorder(root, sim.spec) as rec:
        for e in range(3):
            rec.begin_episode(sim.reset(seed=e), e)
            for _ in range(40):
                action = int(rng.integers(sim.spec.num_actions))
                step = sim.step(action)
                rec.add(action, step)
                if step.terminated or step.truncated:
                    break
            rec.end_episode()
    sim.close()
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ar"
    assert train.main(["fit", "--config", CONFIG, "--data", str(data), "--out", str(out), *TINY,
                       "--set", "train.checkpoint_every=0", "--set", "train.eval_every=0"]) == 0
    return out


def _batch(model: ARWorldModel, seed: int = 0) -> Batch:
    """Real frames in training windows (from the real game, resized like models/data.py)."""
    sim = make_simulator("breakout", audio=False, seed=seed)
    rng = np.random.default_rng(seed)
    frames, actions, rewards = [sim.reset(seed)], [], []
    for _ in range(30):
        a = int(rng.integers(sim.spec.num_actions))
        st = sim.step(a)
        frames.append(st.frame)
        actions.append(a)
        rewards.append(st.reward)
    sim.close()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(64, 64), mode="area") / 127.5 - 1
    t = model.train_window
    starts = range(0, 30 - t, 3)
    return Batch(frames=torch.stack([x[s:s + t + 1] for s in starts]),
                 actions=torch.tensor([actions[s:s + t] for s in starts]),
                 rewards=torch.tensor([rewards[s:s + t] for s in starts], dtype=torch.float32),
                 terminations=torch.zeros(len(starts), t), events=torch.zeros(len(starts), t, EVENT_DIM),
                 valid=torch.ones(len(starts), t + 1, dtype=torch.bool))


def test_each_stage_lowers_its_loss_and_trains_only_its_part():
    torch.manual_seed(0)
    config = resolve_config(CONFIG, ["preset=tiny"])
    model = ARWorldModel.from_config(config, find_game("breakout"))
    batch = _batch(model)
    for stage, key in (("tokenizer", "tokenizer_loss"), ("dynamics", "token_ce")):
        model.set_stage(stage)
        trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == {"tokenizer" if stage == "tokenizer" else "transformer"}
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
        history = []
        for _ in range(25):
            loss, logs = model.loss(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(logs[key])
        assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5]), (stage, history)
    with pytest.raises(ConfigError, match="unknown training stage"):
        model.set_stage("tokeniser")


def test_change_weight_puts_the_token_loss_on_what_moves():
    """With change_weight the dynamics loss is a weighted mean that leans on changed tokens: the
    same weights and batch give another loss, and w = 0 gives the plain MaskGIT loss."""
    config = resolve_config(CONFIG, ["preset=tiny", "model.change_weight=0"])
    plain = ARWorldModel.from_config(config, find_game("breakout"))
    weighted = ARWorldModel.from_config(resolve_config(CONFIG, ["preset=tiny", "model.change_weight=50"]),
                                        find_game("breakout"))
    weighted.load_state_dict(plain.state_dict())
    batch = _batch(plain)
    for m in (plain, weighted):
        m.set_stage("dynamics")
    losses = []
    for m in (plain, weighted):
        torch.manual_seed(1)  # same masks and context noise for both
        loss, logs = m.loss(batch)
        loss.backward()
        losses.append(logs["token_ce"])
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
    assert abs(losses[0] - losses[1]) > 1e-4, losses


def test_state_is_advanced_once(run: Path):
    model = load_run(run).model
    frames = torch.zeros(1, model.context_frames, 3, 64, 64)
    state = model.start(frames, torch.zeros(1, model.context_frames - 1, dtype=torch.long))
    model.advance(state, torch.tensor([0]), torch.zeros(1, EVENT_DIM))
    with pytest.raises(RuntimeError, match="already advanced"):
        model.advance(state, torch.tensor([0]), torch.zeros(1, EVENT_DIM))
    with pytest.raises(UserError, match="start needs frames"):
        model.start(torch.zeros(1, 2, 3, 96, 96), torch.zeros(1, 1, dtype=torch.long))


def test_fit_saves_a_playable_run_with_sampler_presets(run: Path):
    loaded = load_run(run)
    assert loaded.config["family"] == "autoregressive"
    assert loaded.config["stats"]["step"] == 60
    sim = open_neural_simulator(run, device="cpu")
    assert sim.sampler_presets == ("fast", "quality", "greedy") and sim.sampler == "fast"
    first = sim.reset(0)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    for name in sim.sampler_presets:
        sim.set_sampler(name)
        for i in range(3):
            st = sim.step(i % sim.spec.num_actions)
            assert st.frame.shape == (64, 64, 3) and isinstance(st.terminated, bool)
    a = [sim.reset(5)] + [sim.step(1).frame for _ in range(4)]
    b = [sim.reset(5)] + [sim.step(1).frame for _ in range(4)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # seeded: same rollout
    with pytest.raises(UserError, match="no compiled step"):  # play.py --compile on this family
        sim.use_compile()


def test_eval_and_bench_write_json(run: Path, data: Path, tmp_path: Path):
    out = tmp_path / "eval.json"
    assert train.main(["eval", "--checkpoint", str(run), "--data", str(data), "--json", str(out),
                       "--max-rollouts", "2", "--max-horizon", "16", "--drift-steps", "12",
                       "--drift-rollouts", "1", "--device", "cpu", "--no-progress"]) == 0
    result = json.loads(out.read_text())
    for key in ("psnr", "ssim", "action_dpsnr_16", "drift", "reward_f1", "termination_f1"):
        assert key in result
    bench = tmp_path / "bench.json"
    assert train.main(["bench", "--checkpoint", str(run), "--device", "cpu", "--frames", "4",
                       "--warmup", "1", "--json", str(bench)]) == 0
    figures = json.loads(bench.read_text())
    for name in ("fast", "quality", "greedy"):
        assert figures[name]["fps"] > 0


def test_headless_neural_play(run: Path, tmp_path: Path):
    out = tmp_path / "play.json"
    proc = subprocess.run([sys.executable, "play.py", "--checkpoint", str(run), "--headless",
                           "--max-steps", "20", "--autopilot", "random", "--device", "cpu",
                           "--json", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["steps"] == 20


def test_tokenizer_is_reused_from_another_run(run: Path, data: Path, tmp_path: Path):
    out = tmp_path / "reuse"
    assert train.main(["fit", "--config", CONFIG, "--data", str(data), "--out", str(out), *TINY,
                       "--set", f"tokenizer={run}", "--set", "train.stages=[dynamics]",
                       "--set", "train.stage_steps=[3]", "--set", "train.checkpoint_every=0"]) == 0
    old, new = load_run(run).model, load_run(out).model
    for name, value in old.tokenizer.state_dict().items():
        assert torch.equal(value, new.tokenizer.state_dict()[name]), name
    spec = find_game("breakout")
    config = resolve_config(CONFIG, ["preset=tiny", f"tokenizer={run}"])
    with pytest.raises(ConfigError, match="cannot include 'tokenizer'"):
        ARWorldModel.from_config(config, spec)


@pytest.mark.parametrize("change, message", [
    ({"game.name": "pong"}, "trained on pong"),
    ({"model.resolution": 32}, "works at 32x32"),
    ({"model.tokenizer.levels": [5, 5, 5]}, "another tokenizer shape"),
])
def test_tokenizer_of_another_game_or_resolution_is_refused(run: Path, tmp_path: Path, change: dict,
                                                            message: str):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in change.items():
        node = saved
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    (other / "config.yaml").write_text(yaml.safe_dump(saved))
    config = resolve_config(CONFIG, ["preset=tiny", f"tokenizer={other}", "train.stages=[dynamics]",
                                     "train.stage_steps=[1]"])
    with pytest.raises(UserError, match=message):
        ARWorldModel.from_config(config, find_game("breakout"))
    missing = resolve_config(CONFIG, ["preset=tiny", f"tokenizer={tmp_path / 'nowhere'}",
                                      "train.stages=[dynamics]", "train.stage_steps=[1]"])
    with pytest.raises(UserError, match="needs model.safetensors"):
        ARWorldModel.from_config(missing, find_game("breakout"))


def test_context_longer_than_the_episodes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    short = tmp_path / "short"
    sim = make_simulator("breakout", audio=False)
    with Recorder(short, sim.spec) as rec:
        rec.begin_episode(sim.reset(seed=0), 0)
        for _ in range(4):
            rec.add(0, sim.step(0))
        rec.end_episode()
    sim.close()
    code = train.main(["fit", "--config", CONFIG, "--data", str(short), "--out", str(tmp_path / "r"), *TINY])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "too small" in err and len(err.splitlines()) == 1


def test_bad_model_configs_name_the_problem():
    spec = find_game("breakout")
    cases = [(["model.context_frames=9", "model.transformer.window=4"], "at most model.transformer.window"),
             (["model.sampler=slow"], "unknown model.sampler"),
             (["model.transformer.widht=64"], "did you mean 'width'"),
             (["model.samplers={fast: {pases: 2}}"], "did you mean 'passes'"),
             (["model.reward_class_weights=[1, 8]"], "reward_class_weights must list 3 numbers")]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message):
            ARWorldModel.from_config(resolve_config(CONFIG, ["preset=tiny", *overrides]), spec)

"""train.py fit / eval end to end on real Breakout recordings with the tiny diffusion preset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train
from engine.dataset import Recorder, open_dataset
from engine.errors import UserError
from engine.games import make_simulator
from models.checkpoint import load_run
from models.config import ConfigError, resolve_config
from models.data import Recordings
from models.registry import build_model
from models.train_config import TrainConfig
from models.windows import WindowSampler
from models.world import HIDDEN_EVENT

CONFIG = str(Path(__file__).resolve().parents[1] / "assets" / "configs" / "breakout-diffusion.yaml")
TINY = ["--set", "preset=tiny", "--device", "cpu", "--no-progress"]


def record(root: Path, episodes: int, steps: int) -> Path:
    sim = make_simulator("breakout", audio=False)
    rng = np.random.default_rng(1)
    with Recorder(root, sim.spec) as rec:
        for e in range(episodes):
            rec.begin_episode(sim.reset(seed=e), e)
            for _ in range(steps):
                action = int(rng.integers(sim.spec.num_actions))
                step = sim.step(action)
                rec.add(action, step)
                if step.terminated or step.truncated:
                    break
            rec.end_episode()
    sim.close()
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scripted Breakout with random world events (rain, fog, an extra life, ...)."""
    root = tmp_path_factory.mktemp("bk") / "data"
    assert train.main(["collect", "--game", "breakout", "--policy", "scripted", "--episodes", "4",
                       "--max-steps", "80", "--no-audio", "--events", "random", "--out", str(root)]) == 0
    return root


def fit(data: Path, out: Path, *extra: str) -> int:
    return train.main(["fit", "--config", CONFIG, "--data", str(data), "--out", str(out), *TINY, *extra])


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "straight"
    assert fit(data, out, "--steps", "40", "--set", "train.checkpoint_every=0",
               "--set", "train.holdout_fraction=0.5") == 0
    return out


def heldout_loss(model: torch.nn.Module, data: Path) -> float:
    """The denoising loss on fixed batches (the reward head's class-weighted loss on a handful of
    scoring steps swings too much in 40 tiny steps to say whether training works)."""
    recs = Recordings(open_dataset(data), 64, ["rain"], progress=False)
    sampler = WindowSampler(recs, list(range(4)), 4, 32, {"rain": np.zeros((1, 384), np.float32)}, seed=99)
    torch.manual_seed(0)
    with torch.no_grad():
        return float(np.mean([model.loss(sampler.batch(k).to_batch("cpu"))[1]["loss/denoise"]
                              for k in range(3)]))


def test_fit_lowers_the_loss(trained: Path, data: Path) -> None:
    run = load_run(trained)
    assert run.config["stats"]["step"] == 40 and run.config["stats"]["finished"]
    assert run.start_frames.shape[1:] == (4, 3, 64, 64)
    torch.manual_seed(0)  # fit seeds with train.seed = 0 before building the model
    untrained = build_model(resolve_config(CONFIG, ["preset=tiny"]), run.spec)
    before, after = heldout_loss(untrained, data), heldout_loss(run.model, data)
    assert after < 0.7 * before, (before, after)
    assert (trained / "tensorboard").is_dir()


def test_resume_note_names_real_changes_only() -> None:
    """A run saved by an older version wrote lr as '2e-4' and lacked newer keys: not changes."""
    from models.commands.fit import train_changes

    older = {"train": {"lr": "2e-4", "batch_size": 16}}
    assert train_changes({"train": {"lr": 0.0002, "batch_size": 16, "reward_fraction": 0.0}}, older) == []
    assert train_changes({"train": {"lr": 0.0002, "batch_size": 32}}, older) == ["train.batch_size 16 -> 32"]


def test_resume_continues_step_and_optimizer_bit_exactly(trained: Path, data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "resumed"
    assert fit(data, out, "--steps", "25", "--set", "train.holdout_fraction=0.5") == 0
    assert fit(data, out, "--steps", "40", "--resume", "--set", "train.holdout_fraction=0.5") == 0
    stdout = capsys.readouterr().out
    assert "resuming" in stdout and "other training settings" not in stdout
    a = load_file(str(trained / "train_state.safetensors"))
    b = load_file(str(out / "train_state.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)  # raw weights, EMA and Adam moments
    assert load_run(out).config["stats"]["step"] == 40
    # A kill between the renames of a save leaves a stale yaml beside new tensors: still resumable.
    (out / "train_state.yaml").write_text("step: 3\n")
    assert fit(data, out, "--steps", "41", "--resume", "--set", "train.holdout_fraction=0.5") == 0
    assert "step: 41\n" in (out / "train_state.yaml").read_text()
    # Settings left out on resume fall back to the config's; the note names what changed.
    capsys.readouterr()
    assert fit(data, out, "--steps", "42", "--resume") == 0
    assert "train.holdout_fraction 0.5 -> 0.1" in capsys.readouterr().out


def test_existing_run_without_resume_is_refused(trained: Path, data: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    stamp = (trained / "model.safetensors").stat().st_mtime_ns
    assert fit(data, trained, "--steps", "2") == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (trained / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_cuda_without_gpu(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = train.main(["fit", "--config", CONFIG, "--data", str(data), "--out", str(tmp_path / "r"),
                       "--device", "cuda", "--set", "preset=tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("override", "words"), [
    ("train.learning_rate=1", "unknown config key 'train.learning_rate'"),
    ("model.unet.chanels=[8]", "'model.unet.chanels' (did you mean 'channels'?)"),
    ("preset=huge", "unknown preset 'huge'")])
def test_config_typos_name_the_key(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   override: str, words: str) -> None:
    assert fit(data, tmp_path / "r", "--steps", "1", "--set", override) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_a_run_saved_before_a_setting_existed_can_be_given_it(trained: Path, data: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A run's config.yaml holds the keys its config file named, so a setting added since (or
    left at its default) is absent: `--config RUN --set` can still set it, and a misspelt key is
    still named."""
    assert "high_sigma_fraction" not in (trained / "config.yaml").read_text()
    run = ["fit", "--config", str(trained), "--data", str(data), "--steps", "1", "--no-progress", "--device", "cpu"]
    assert train.main([*run, "--out", str(tmp_path / "r"), "--set", "model.edm.high_sigma_fraction=0.25"]) == 0
    assert load_run(tmp_path / "r").config["model"]["edm"]["high_sigma_fraction"] == 0.25
    assert train.main([*run, "--out", str(tmp_path / "s"), "--set", "model.edm.high_sigma_fractoin=0.25"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: unknown config key 'model.edm.high_sigma_fractoin' (did you mean 'high_sigma_fraction'?)"


def test_dataset_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = record(tmp_path / "small", episodes=2, steps=3)
    assert fit(small, tmp_path / "r", "--steps", "1") == 2
    err = capsys.readouterr().err
    assert "too small" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_eval_writes_json_and_pngs(trained: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    code = train.main(["eval", "--checkpoint", str(trained), "--data", str(data), "--json", str(out),
                       "--max-rollouts", "4", "--drift-steps", "12", "--drift-rollouts", "2",
                       "--device", "cpu", "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    for key in ("psnr", "ssim", "action_dpsnr_16", "drift", "reward_f1", "termination_f1", "episodes",
                "checkpoint"):
        assert key in result
    assert set(result["psnr"]) == {"1", "4", "16", "64"}
    assert train.main(["eval", "--checkpoint", str(trained), "--data", str(data), "--episodes", "0"]) == 2
    assert result["psnr"]["1"] > 5 and 0 < result["ssim"]["1"] <= 1
    # Signed brightness gap in grey levels: finite, and within what 8-bit frames allow.
    assert set(result["level_shift"]) == set(result["psnr"]) and abs(result["level_shift"]["1"]) < 255
    assert isinstance(result["action_dpsnr_16"], float)
    assert result["drift"]["12"] > 0 and result["drift"]["real_baseline"] >= 0
    assert result["episodes"] == load_run(trained).config["data"]["heldout_episodes"]
    # One step ahead of real context at every held-out step after the first context.
    run = load_run(trained)
    recs = Recordings(open_dataset(str(data)), 64, sorted(run.event_bank), progress=False)
    c = run.model.context_frames
    assert result["one_step_count"] == sum(recs.episodes[i].num_steps - c + 1 for i in result["episodes"])
    assert result["reward_f1_1"] is None or 0 <= result["reward_f1_1"] <= 1
    for png in ("eval_horizons.png", "eval_strip.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_event_fidelity(trained: Path, data: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    run = load_run(trained)
    assert run.config["events"]["trained"]  # the model was conditioned on the recorded events
    out = tmp_path / "ev.json"
    assert train.main(["eval", "--checkpoint", str(trained), "--data", str(data), "--json", str(out),
                       "--max-rollouts", "2", "--drift-steps", "0", "--events", "--device", "cpu",
                       "--no-progress"]) == 0
    events = json.loads(out.read_text())["events"]
    assert events["per_event"], events
    for entry in events["per_event"].values():
        assert entry["onsets"] >= 1 and entry["kind"] in ("look", "dynamics")
        assert isinstance(entry["dpsnr_16"], float) and isinstance(entry["dpsnr_16_heldout"], float)
        # The play-path figure: only the held-out wordings the console's matcher acts on.
        understood, total = map(int, entry["heldout_understood"].split("/"))
        assert 0 < understood <= total
        assert isinstance(entry["dpsnr_16_heldout_understood"], float)
        assert isinstance(entry["dpsnr_16_heldout_console"], float)
    # Conditioning reaches the frames: with and without the event differ somewhere.
    assert any(e["dpsnr_16"] != 0 for e in events["per_event"].values())
    few = [k for k, e in events["per_event"].items() if e["onsets"] < 8]
    assert bool(few) == ("few held-out onsets" in capsys.readouterr().out), few
    assert (tmp_path / "ev_events.png").read_bytes()[:4] == b"\x89PNG"


AR_CONFIG = """\
game: breakout
family: autoregressive
model:
  train_window: 6
  tokenizer: {channels: [8, 16, 16]}
  transformer: {width: 32, layers: 1, heads: 2, window: 4}
train: {batch_size: 4, lr: 1.0e-3, warmup_steps: 2, eval_every: 0, checkpoint_every: 0, sample_every: 0,
        num_workers: 0, stages: [tokenizer, dynamics], stage_steps: [3, 3]}
"""


def test_stages_run_in_order_and_resume_knows_the_stage(data: Path, tmp_path: Path) -> None:
    config = tmp_path / "ar.yaml"
    config.write_text(AR_CONFIG)
    out = tmp_path / "ar"
    base = ["fit", "--config", str(config), "--data", str(data), "--out", str(out), "--device", "cpu",
            "--no-progress"]
    assert train.main(base) == 0
    state = (out / "train_state.yaml").read_text()
    assert "step: 6\nstage: 1\nstage_step: 3\n" in state
    # A longer dynamics stage: resume stays in stage 1 and continues its step count.
    assert train.main([*base, "--resume", "--set", "train.stage_steps=[3,5]"]) == 0
    state = (out / "train_state.yaml").read_text()
    assert "step: 8\nstage: 1\nstage_step: 5\n" in state
    run = load_run(out)
    assert run.config["stats"]["finished"] and run.config["family"] == "autoregressive"


def test_ctrl_c_saves_and_resume_finishes(data: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "interrupted"
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "train.py"), "fit", "--config", CONFIG, "--data", str(data),
           "--out", str(out), *TINY, "--steps", "400", "--set", "train.checkpoint_every=2"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "train_state.safetensors").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout
    assert "--resume" in stdout
    step = load_run(out).config["stats"]["step"]
    assert 2 <= step < 400
    assert fit(data, out, "--steps", str(step + 3), "--resume") == 0
    assert load_run(out).config["stats"]["step"] == step + 3


def test_config_of_another_game_is_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pong = CONFIG.replace("breakout-diffusion", "pong-diffusion")
    code = train.main(["fit", "--config", pong, "--data", str(data), "--out", str(tmp_path / "r"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "is for pong, but" in err and "breakout" in err


def test_event_change_windows_are_oversampled(data: Path) -> None:
    """Windows where an event starts or ends carry the only signal the event vector adds over
    the context frames; event_change_fraction draws that share of each batch from them."""
    from models.text import load_event_bank

    bank = load_event_bank("train")
    recs = Recordings(open_dataset(data), 64, sorted(bank), progress=False)
    eps = list(range(len(recs.episodes)))

    def straddles(batch_events: np.ndarray) -> np.ndarray:  # (B, T, D) -> (B,)
        return (np.abs(batch_events - batch_events[:, :1]).sum(-1) > 0).any(1)

    plain = WindowSampler(recs, eps, 4, 64, bank, event_dropout=0.0, seed=3)
    boosted = WindowSampler(recs, eps, 4, 64, bank, event_dropout=0.0, seed=3, event_change_fraction=0.5)
    assert len(boosted.change_windows) > 0 and len(plain.change_windows) == 0
    share = [float(np.mean([straddles(s.batch(k).events.numpy()).mean() for k in range(8)]))
             for s in (plain, boosted)]
    assert share[1] >= 0.4 and share[1] > share[0] + 0.2, share
    assert torch.equal(boosted.batch(5).frames, boosted.batch(5).frames)  # still a pure function of the index

    # event_focus aims the change windows at one event; others keep weight 1, unknown names fail.
    changes = [n for n in recs.event_names
               if any((e.events[1:, j] != e.events[:-1, j]).any() for e in recs.episodes
                      for j in [recs.event_names.index(n)])]
    target = changes[0]
    focused = WindowSampler(recs, eps, 4, 64, bank, event_dropout=0.0, seed=3, event_change_fraction=1.0,
                            event_focus={target: 20.0})
    even = WindowSampler(recs, eps, 4, 64, bank, event_dropout=0.0, seed=3, event_change_fraction=1.0)
    col = recs.event_names.index(target)

    def target_share(s: WindowSampler) -> float:
        flips = []
        for k in range(8):
            b = s.batch(k)
            mean = bank[target].mean(0)
            on = (b.events.numpy() @ mean / (np.linalg.norm(mean) ** 2)) > 0.5  # (B, T) target active
            flips.append((on != on[:, :1]).any(1))
        return float(np.concatenate(flips).mean())

    assert focused.change_p is not None and even.change_p is None and col >= 0
    assert target_share(focused) > target_share(even) + 0.2, (target, target_share(focused), target_share(even))
    with pytest.raises(UserError, match="event_focus names 'volcano'"):
        WindowSampler(recs, eps, 4, 64, bank, event_change_fraction=0.5, event_focus={"volcano": 2.0})


def test_scoring_windows_are_oversampled(data: Path) -> None:
    """reward_fraction draws that share of each batch from windows whose target step scores."""
    from models.text import load_event_bank

    bank = load_event_bank("train")
    recs = Recordings(open_dataset(data), 64, sorted(bank), progress=False)
    eps = list(range(len(recs.episodes)))
    scoring = sum(int((e.rewards[3:] != 0).sum()) for e in recs.episodes)  # steps that end a 4-step window
    assert scoring >= 1  # the scripted player breaks bricks

    def share(s: WindowSampler) -> float:
        return float(np.mean([(s.batch(k).rewards[:, -1] != 0).float().mean() for k in range(8)]))

    plain = WindowSampler(recs, eps, 4, 64, bank, seed=3)
    aimed = WindowSampler(recs, eps, 4, 64, bank, seed=3, reward_fraction=0.5)
    assert len(aimed.reward_windows) == scoring and len(plain.reward_windows) == 0
    assert share(aimed) >= 0.4 and share(aimed) > share(plain) + 0.3, (share(plain), share(aimed))
    with pytest.raises(ConfigError, match="reward_fraction"):
        TrainConfig.parse({"reward_fraction": 1.5})


def test_eval_finds_the_heldout_split_of_moved_data(trained: Path, data: Path, tmp_path: Path) -> None:
    """A checkpoint shipped with a relative or foreign data path, evaluated on a copy of its data
    elsewhere, still scores only the held-out episodes; other data is scored whole."""
    import shutil

    moved = tmp_path / "elsewhere" / data.name
    shutil.copytree(data, moved)
    other = tmp_path / "other" / data.name
    shutil.copytree(data, other)
    shutil.rmtree(sorted(p for p in other.iterdir() if p.name.startswith("episode-"))[-1])
    held = load_run(trained).config["data"]["heldout_episodes"]
    for where, expect in ((moved, held), (other, [0, 1, 2])):
        out = tmp_path / f"{where.parent.name}.json"
        assert train.main(["eval", "--checkpoint", str(trained), "--data", str(where), "--json", str(out),
                           "--max-rollouts", "2", "--drift-steps", "0", "--device", "cpu",
                           "--no-progress"]) == 0
        assert json.loads(out.read_text())["episodes"] == expect


def test_action_following_benchmark_runs(trained: Path, tmp_path: Path) -> None:
    """benchmarks/action_following.py branches the real emulator and scores the model's rollouts."""
    import subprocess
    import sys

    out = tmp_path / "follow.json"
    proc = subprocess.run([sys.executable, str(Path(CONFIG).parents[2] / "benchmarks" / "action_following.py"),
                           "--checkpoint", str(trained), "--states", "3", "--hold", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["states"] == 3 and result["comparisons"] > 0
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["action_blind"]["accuracy"] <= 1
    assert set(result["per_action_accuracy"]) == {"NOOP", "FIRE", "RIGHT", "LEFT"}


def test_null_event_dropout_spares_windows_where_events_change(data: Path) -> None:
    """With dropout 1, every window whose events stay put has them hidden behind the null vector
    (zeros stay "no event"); a window where an event starts or ends keeps them (hiding them
    there teaches the model to invent events)."""
    from models.text import load_event_bank

    bank = load_event_bank("train")
    recs = Recordings(open_dataset(data), 64, sorted(bank), progress=False)
    eps = list(range(len(recs.episodes)))
    dropped = WindowSampler(recs, eps, 4, 64, bank, event_dropout=1.0, seed=5, event_change_fraction=0.5)
    reference = WindowSampler(recs, eps, 4, 64, bank, event_dropout=0.0, seed=5, event_change_fraction=0.5)
    changing = 0
    for k in range(6):
        ref, out = reference.batch(k).events.numpy(), dropped.batch(k).events.numpy()  # (B, T, D)
        moving = (np.abs(ref - ref[:, :1]).sum(-1) > 0).any(1)  # same draws: same windows
        changing += int(moving.sum())
        np.testing.assert_array_equal(out[moving], ref[moving])
        was_on = np.abs(ref[~moving]).sum(-1) > 0  # (N, T): steps whose events were hidden
        assert (out[~moving][was_on] == HIDDEN_EVENT).all() and not out[~moving][~was_on].any()
    assert changing > 0


def test_event_noise_keeps_each_vector_a_unit_vector_near_its_paraphrase(data: Path) -> None:
    """train.event_noise perturbs each drawn paraphrase embedding (held-out wordings lie further
    from an event's cluster than training ones) and renormalises it; windows and draws stay put."""
    from models.text import load_event_bank

    bank = load_event_bank("train")
    recs = Recordings(open_dataset(data), 64, sorted(bank), progress=False)
    eps = list(range(len(recs.episodes)))
    clean = WindowSampler(recs, eps, 4, 64, bank, seed=7, event_change_fraction=0.5)
    noisy = WindowSampler(recs, eps, 4, 64, bank, seed=7, event_change_fraction=0.5, event_noise=0.8)
    ref, out = clean.batch(2), noisy.batch(2)
    assert torch.equal(ref.frames, out.frames) and torch.equal(ref.actions, out.actions)
    r, o = ref.events.numpy(), out.events.numpy()  # (B, T, D)
    single = np.abs(np.linalg.norm(r, axis=-1) - 1) < 1e-5  # steps with exactly one active event
    assert single.sum() > 8
    cos = (r[single] * o[single]).sum(-1) / np.linalg.norm(o[single], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(o[single], axis=-1), 1.0, atol=1e-5)
    assert cos.min() > 0.7 and cos.mean() < 0.97, (cos.min(), cos.mean())
    assert not o[np.linalg.norm(r, axis=-1) == 0].any()  # no event stays no event
    assert torch.equal(noisy.batch(2).events, out.events)  # still a pure function of the index
    with pytest.raises(ConfigError, match="event_noise"):
        TrainConfig.parse({"event_noise": -1})


def test_a_run_is_a_config_for_fine_tuning_with_its_recipe(trained: Path, data: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # --config RUN takes the model and train sections the run was saved with (holdout 0.5 here,
    # not the file's 0.1) and --init its weights; what it learned from is not a setting.
    out = tmp_path / "again"
    assert train.main(["fit", "--config", str(trained), "--init", str(trained), "--data", str(data),
                       "--out", str(out), "--steps", "3", "--device", "cpu", "--no-progress"]) == 0
    saved = load_run(out).config
    assert saved["train"]["holdout_fraction"] == 0.5 and saved["stats"]["step"] == 3
    assert saved["model"] == load_run(trained).config["model"]
    # A run as its own --config on --resume keeps every training setting it had.
    capsys.readouterr()
    assert train.main(["fit", "--config", str(out), "--data", str(data), "--out", str(out), "--resume",
                       "--steps", "4", "--device", "cpu", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "resuming" in stdout and "other training settings" not in stdout
    assert load_run(out).config["stats"]["step"] == 4
    assert train.main(["fit", "--config", str(trained), "--data", str(data), "--out", str(tmp_path / "x"),
                       "--set", "preset=base", "--device", "cpu", "--no-progress"]) == 2
    assert "has no presets" in capsys.readouterr().err


def test_trainable_fine_tunes_only_the_named_weights(trained: Path, data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # train.trainable freezes every other weight: only how event vectors enter the U-Net moves.
    out = tmp_path / "events-only"
    assert train.main(["fit", "--config", str(trained), "--init", str(trained), "--data", str(data),
                       "--out", str(out), "--steps", "4", "--device", "cpu", "--no-progress",
                       "--set", "train.trainable=[unet.event_proj]", "--set", "train.ema_decay=0",
                       "--set", "train.event_dropout=0", "--set", "train.lr=1e-2"]) == 0
    before, after = load_file(str(trained / "model.safetensors")), load_file(str(out / "model.safetensors"))
    moved = sorted(k for k in after if not torch.equal(after[k], before[k]))
    assert moved and all("event_proj" in k for k in moved), moved
    capsys.readouterr()
    assert train.main(["fit", "--config", str(trained), "--init", str(trained), "--data", str(data),
                       "--out", str(tmp_path / "typo"), "--steps", "2", "--device", "cpu", "--no-progress",
                       "--set", "train.trainable=[unet.event_projection]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'unet.event_projection', which is no parameter" in err[0] and "unet.event_proj" in err[0]


def test_no_progress_prints_status_lines(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the bar, a long run's log still says how far it is (one line a minute; here every step)."""
    from models.train_log import TrainLog

    monkeypatch.setattr(TrainLog, "STATUS_EVERY_S", 0.0)
    assert fit(data, tmp_path / "run", "--steps", "5", "--set", "train.checkpoint_every=0") == 0
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("fit: step ")]
    assert [ln.split()[2] for ln in lines] == ["2/5,", "3/5,", "4/5,", "5/5,"]
    assert all("steps/s" in ln and "min left" in ln for ln in lines)
    # The share of time the step stood waiting for its batch: a fraction, per line and in all.
    waits = [int(re.search(r"data wait (\d+)%", ln).group(1)) for ln in lines]  # type: ignore[union-attr]
    assert all(0 <= w <= 100 for w in waits)
    assert re.search(r"samples/s, \d+% of it waiting for data\)", out[-1]), out[-1]


@pytest.mark.parametrize("fused", [False, True])
def test_non_finite_steps_are_skipped_then_refused(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], fused: bool) -> None:
    """A non-finite loss changes no weight; 20 in a row end fit with one line. Unfused (the CPU)
    the step is skipped at once; fused (CUDA) the optimizer skips it on the device and fit reads
    the count every few steps, so no step waits for the GPU."""
    import models.trainer as trainer_mod
    from models.diffusion_world import DiffusionWorldModel

    plain = trainer_mod.make_optimizer

    def make(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
        opt = plain(model, cfg, device)
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups]
        return torch.optim.AdamW(groups, betas=(0.9, 0.99), fused=fused)

    seen: list[dict[str, torch.Tensor]] = []
    real_loss = DiffusionWorldModel.loss

    def broken(self: DiffusionWorldModel, batch: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not seen:
            seen.append({k: v.detach().clone() for k, v in self.state_dict().items()})
        loss, logs = real_loss(self, batch)  # type: ignore[arg-type]
        return loss * float("nan"), logs

    monkeypatch.setattr(trainer_mod, "make_optimizer", make)
    monkeypatch.setattr(DiffusionWorldModel, "loss", broken)
    capsys.readouterr()
    assert fit(data, tmp_path / "nan", "--steps", "60") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not finite for" in err[0] and "steps in a row" in err[0], err
    if (tmp_path / "nan" / "model.safetensors").exists():  # the fused path counted skipped steps
        saved = load_file(str(tmp_path / "nan" / "model.safetensors"))
        assert all(torch.equal(saved[k].float(), seen[0][k].float()) for k in saved if k in seen[0])

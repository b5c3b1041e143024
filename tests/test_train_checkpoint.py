"""Run directories and training windows: real Breakout recordings, the real tiny diffusion model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.dataset import Recorder, open_dataset
from engine.errors import UserError
from engine.games import make_simulator
from engine.simulator import WorldEvent
from models.checkpoint import FORMAT_VERSION, load_run, load_train_state, save_run
from models.config import resolve_config
from models.data import Recordings, split_episodes
from models.registry import build_model
from models.windows import WindowSampler
from models.world import HIDDEN_EVENT

CONFIG = Path(__file__).resolve().parents[1] / "assets" / "configs" / "breakout-diffusion.yaml"


def record(root: Path, episodes: int, steps: int, events: bool = False) -> Path:
    """Random play of the real Breakout; with `events`, rain is active on steps 10..19."""
    sim = make_simulator("breakout", audio=False)
    rng = np.random.default_rng(0)
    with Recorder(root, sim.spec) as rec:
        for e in range(episodes):
            rec.begin_episode(sim.reset(seed=e), e)
            for t in range(steps):
                action = int(rng.integers(sim.spec.num_actions))
                step = sim.step(action)
                active = [WorldEvent("rain", "make it rain")] if events and 10 <= t < 20 else []
                rec.add(action, step, active)
                if step.terminated or step.truncated:
                    break
            rec.end_episode()
    sim.close()
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("bk"), episodes=3, steps=40, events=True)


@pytest.fixture(scope="module")
def config() -> dict:
    return resolve_config(CONFIG, ["preset=tiny"])


@pytest.fixture(scope="module")
def run(data: Path, config: dict, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    spec = open_dataset(data).spec
    torch.manual_seed(0)
    model = build_model(config, spec)
    out = tmp_path_factory.mktemp("runs") / "run"
    save_run(out, ema_model=model, config=config, spec=spec,
             start_frames=torch.randint(0, 255, (2, 4, 3, 64, 64), dtype=torch.uint8),
             start_actions=torch.zeros(2, 3, dtype=torch.long),
             event_bank={"rain": np.ones(384, np.float32) / np.sqrt(384)}, stats={"step": 7})
    return out, model


def test_save_load_is_bit_exact(run: tuple[Path, torch.nn.Module]) -> None:
    out, model = run
    loaded = load_run(out, expect_game="breakout")
    want, got = model.state_dict(), loaded.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.spec.name == "breakout" and loaded.spec.num_actions == 4
    assert loaded.start_frames.dtype == torch.uint8 and loaded.start_frames.shape == (2, 4, 3, 64, 64)
    assert loaded.config["format_version"] == FORMAT_VERSION and loaded.config["stats"]["step"] == 7
    assert set(loaded.event_bank) == {"rain"}
    assert load_train_state(out) is None  # play-only save: no resume files
    # The U-Net is registered twice (unet.*, denoiser.net.*) but stored once.
    unique = {p.data_ptr(): p.numel() * p.element_size() for p in model.state_dict().values()}
    frames = 2 * 4 * 3 * 64 * 64
    assert (out / "model.safetensors").stat().st_size < sum(unique.values()) + frames + 100_000


def test_bf16_storage_halves_the_file(run: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    out, model = run
    loaded = load_run(out)
    save_run(tmp_path / "half", ema_model=model, config=loaded.config, spec=loaded.spec,
             start_frames=loaded.start_frames, start_actions=loaded.start_actions, event_bank={},
             stats={"step": 1}, save_dtype="bfloat16")
    half = load_run(tmp_path / "half")
    p = next(iter(model.parameters())).detach()
    assert next(iter(half.model.parameters())).dtype == torch.float32
    assert torch.allclose(next(iter(half.model.parameters())), p, atol=1e-2 * float(p.abs().max()) + 1e-3)
    weights = sum(v.numel() for v in model.state_dict().values()) * 4
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * weights + 200_000


def _damage(src: Path, dst: Path, how: str) -> None:
    shutil.copytree(src, dst)
    model, config = dst / "model.safetensors", dst / "config.yaml"
    if how == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif how == "garbage":
        model.write_bytes(b"\x00not a safetensors file" * 100)
    elif how == "missing":
        model.unlink()
    elif how == "version":
        config.write_text(config.read_text().replace(f"format_version: {FORMAT_VERSION}", "format_version: 0"))
    elif how == "yaml":
        config.write_text(config.read_text() + "\nbroken: [\n")
    elif how == "weights":  # the config describes a wider network than the weights
        config.write_text(config.read_text().replace("cond_dim: 32", "cond_dim: 48"))


@pytest.mark.parametrize(("how", "words"), [
    ("truncated", "truncated or corrupt"), ("garbage", "truncated or corrupt"),
    ("missing", "model.safetensors is missing"), ("version", "format 0"),
    ("yaml", "not valid yaml"), ("weights", "do not match"), ("nodir", "not found")])
def test_bad_checkpoints_give_one_line(run: tuple[Path, torch.nn.Module], tmp_path: Path, how: str,
                                       words: str) -> None:
    bad = tmp_path / "bad"
    if how != "nodir":
        _damage(run[0], bad, how)
    with pytest.raises(UserError) as err:
        load_run(bad)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_other_game_is_refused(run: tuple[Path, torch.nn.Module]) -> None:
    with pytest.raises(UserError, match="is a breakout model, not pong"):
        load_run(run[0], expect_game="pong")


def test_cache_windows_and_event_vectors(data: Path) -> None:
    ds = open_dataset(data)
    recs = Recordings(ds, 64, ["night", "rain"], progress=False)
    cache = sorted((data / ".cache" / "64").glob("*.npy"))
    assert len(cache) == 3
    # Episodes are built on several threads but kept in dataset order, each with its own steps.
    assert [e.index for e in recs.episodes] == [0, 1, 2]
    assert [e.num_steps for e in recs.episodes] == [len(ds.read(i, ("actions",))["actions"]) for i in range(3)]
    stamp = cache[0].stat().st_mtime_ns
    again = Recordings(open_dataset(data), 64, ["night", "rain"], progress=False)
    assert cache[0].stat().st_mtime_ns == stamp  # fresh cache is reused, not rebuilt
    assert np.array_equal(np.asarray(again.episodes[0].frames), np.asarray(recs.episodes[0].frames))
    assert recs.trained_events([0, 1, 2]) == ["rain"]

    bank = {"night": np.eye(384, dtype=np.float32)[:2], "rain": np.eye(384, dtype=np.float32)[2:5]}
    sampler = WindowSampler(recs, [0, 1, 2], window=8, batch_size=64, event_bank=bank, event_dropout=0.0)
    raw = sampler.batch(3)
    assert torch.equal(raw.frames, sampler.batch(3).frames)  # batch i is a pure function of i
    batch = raw.to_batch("cpu")
    assert batch.frames.shape == (64, 9, 3, 64, 64) and batch.valid.all()
    assert -1.0 <= float(batch.frames.min()) and float(batch.frames.max()) <= 1.0
    on = batch.events.abs().sum(-1) > 0  # (B, T)
    assert on.any() and not on.all()
    # Active steps carry exactly one unit rain paraphrase (rows 2..4 of the identity), never night.
    vecs = batch.events[on]
    assert torch.allclose(vecs.norm(dim=-1), torch.ones(len(vecs)))
    assert float(vecs[:, 2:5].sum()) == len(vecs) and float(vecs[:, :2].abs().sum()) == 0
    dropped = WindowSampler(recs, [0, 1, 2], 8, 64, bank, event_dropout=1.0).batch(3).events
    ref = WindowSampler(recs, [0, 1, 2], 8, 64, bank, event_dropout=0.0).batch(3).events  # same draws
    steady = ~((ref - ref[:, :1]).abs().sum(-1) > 0).any(1)  # windows where no event starts or ends
    assert steady.any() and torch.equal(dropped[~steady], ref[~steady])
    # Hidden steps carry the one null vector; steps with no event stay zeros ("a clear world").
    hidden = torch.from_numpy(HIDDEN_EVENT)
    was_on = ref[steady].abs().sum(-1) > 0  # (N, T)
    assert was_on.any() and (~was_on).any()
    assert torch.equal(dropped[steady][was_on], hidden.expand(int(was_on.sum()), -1))
    assert float(dropped[steady][~was_on].abs().sum()) == 0


def test_split_and_too_small_data(tmp_path: Path, data: Path) -> None:
    train, held = split_episodes(20, 0.1)
    assert len(held) == 2 and not set(train) & set(held)
    assert split_episodes(21, 0.1)[1] == held  # appending episodes keeps the split
    assert split_episodes(1, 0.5) == ([0], [])
    recs = Recordings(open_dataset(data), 64, ["rain"], progress=False)
    with pytest.raises(UserError, match="too small"):
        WindowSampler(recs, [0, 1, 2], window=500, batch_size=4, event_bank={})

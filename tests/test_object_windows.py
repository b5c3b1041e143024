"""train.object_fraction: a share of each batch from clear windows where a small object (Breakout's
ball) is in play in every frame, found by `train.object_region`'s pixel test; train.object_crop:
batches of such windows cut small around the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import train
from engine.dataset import open_dataset
from engine.errors import UserError
from models.checkpoint import load_run
from models.config import ConfigError
from models.data import Recordings
from models.object_windows import ObjectRegion
from models.text import load_event_bank
from models.train_config import TrainConfig
from models.windows import WindowSampler
from models.world import EVENT_DIM

# The ball's band in assets/configs/breakout-diffusion.yaml: below the brick wall, above the paddle.
BALL = {"rows": [0.47, 0.875], "cols": [0.0625, 0.9375], "channel": 0, "above": 60}


@pytest.fixture(scope="module")
def recs(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    """Scripted Breakout (it serves and returns the ball) with random world events."""
    root = tmp_path_factory.mktemp("bk") / "data"
    assert train.main(["collect", "--game", "breakout", "--policy", "scripted", "--episodes", "3",
                       "--max-steps", "120", "--no-audio", "--events", "random", "--out", str(root)]) == 0
    return Recordings(open_dataset(root), 64, sorted(load_event_bank("train")), progress=False)


def test_the_region_finds_the_ball_in_real_frames(recs: Recordings) -> None:
    """The pixel test says yes on some recorded frames and no on the first (served ball not yet in
    the band) and on a frame with the band blacked out."""
    frames = np.concatenate([np.asarray(ep.frames) for ep in recs.episodes])  # (N, 3, 64, 64)
    region = ObjectRegion.parse(BALL)
    shown = region.in_play(frames)
    assert 0.05 < shown.mean() < 1.0, shown.mean()
    assert not region.in_play(frames[:1])[0]
    hit = frames[np.flatnonzero(shown)[:1]].copy()
    hit[:, :, 30:56] = 0
    assert not region.in_play(hit)[0]


def test_object_windows_are_oversampled_and_clear(recs: Recordings) -> None:
    """object_fraction 0.6: about that share of the windows drawn show the ball in all their frames
    (a plain draw far fewer), and every listed window has no event on."""
    bank = load_event_bank("train")
    eps = list(range(len(recs.episodes)))
    region = ObjectRegion.parse(BALL)

    def share(sampler: WindowSampler) -> float:
        shown = [region.in_play(b.frames.flatten(0, 1).numpy()).reshape(len(b.frames), -1).all(1)
                 for b in (sampler.batch(k) for k in range(8))]
        return float(np.concatenate(shown).mean())

    plain = WindowSampler(recs, eps, 4, 64, bank, seed=3)
    aimed = WindowSampler(recs, eps, 4, 64, bank, seed=3, object_fraction=0.6, object_region=region)
    assert len(aimed.object_windows) >= 1 and len(plain.object_windows) == 0
    assert share(aimed) >= 0.5 and share(aimed) > share(plain) + 0.2, (share(plain), share(aimed))
    starts = np.concatenate([[0], aimed.cum[:-1]])
    for flat in aimed.object_windows:
        which = int(np.searchsorted(aimed.cum, flat, side="right"))
        ep, s = recs.episodes[aimed.episodes[which]], int(flat - starts[which])
        assert region.in_play(np.asarray(ep.frames[s: s + 5])).all()
        assert not np.asarray(ep.events[s: s + 4]).any()


def test_object_settings_are_checked(recs: Recordings) -> None:
    """A fraction without a region, a reversed band, a misspelt key, a region no frame passes."""
    with pytest.raises(ConfigError, match="needs train.object_region"):
        TrainConfig.parse({"object_fraction": 0.5})
    with pytest.raises(ConfigError, match="object_fraction must be in"):
        TrainConfig.parse({"object_fraction": 1.5, "object_region": BALL})
    with pytest.raises(ConfigError, match="rows must be"):
        TrainConfig.parse({"object_region": {**BALL, "rows": [0.8, 0.2]}})
    with pytest.raises(ConfigError, match="did you mean 'rows'"):
        TrainConfig.parse({"object_region": {"row": [0.2, 0.8]}})
    assert TrainConfig.parse({"object_fraction": 0.5, "object_region": BALL}).object_fraction == 0.5
    never = ObjectRegion.parse({**BALL, "above": 254})
    with pytest.raises(UserError, match="no training window"):
        WindowSampler(recs, [0], 4, 8, load_event_bank("train"), object_fraction=0.5, object_region=never)


def test_crop_batches_hold_the_ball(recs: Recordings) -> None:
    """object_crop 16 in every batch: 16x16 windows cut where the ball is in the last context
    frame, the ball (or the paddle it meets) inside nearly every frame (it moves a few pixels a
    step), no events; the windows also hold the ball leaving the region (meeting the paddle or the
    wall), which windows with the ball in the region in every frame leave out; crops off: batches
    unchanged."""
    bank = load_event_bank("train")
    eps = list(range(len(recs.episodes)))
    region = ObjectRegion.parse(BALL)
    crops = WindowSampler(recs, eps, 4, 32, bank, seed=3, object_region=region,
                          object_crop=16, object_crop_fraction=1.0)
    assert set(crops.object_windows) < set(crops.crop_windows)
    starts = np.concatenate([[0], crops.cum[:-1]])
    leaving = 0
    for flat in crops.crop_windows:
        which = int(np.searchsorted(crops.cum, flat, side="right"))
        ep, s = recs.episodes[crops.episodes[which]], int(flat - starts[which])
        shown = region.in_play(np.asarray(ep.frames[s: s + 5]))  # (5,): frames 0-3 context, 4 target
        assert shown[3] and not np.asarray(ep.events[s: s + 4]).any()
        leaving += not shown[4]
    assert leaving > 0, "no crop window whose target has the ball outside the region"
    batch = crops.batch(0)
    assert batch.frames.shape == (32, 5, 3, 16, 16)
    red = batch.frames[:, :, 0].flatten(2).amax(2)  # (B, 5): the ball's red in each frame
    assert (red[:, 3] > region.above).all()  # the crop is centred on frame 3, the last context frame
    assert (red > region.above).float().mean() > 0.8, red
    assert not batch.events.any()
    same = WindowSampler(recs, eps, 4, 32, bank, seed=3, object_region=region, object_fraction=0.5)
    off = WindowSampler(recs, eps, 4, 32, bank, seed=3, object_region=region, object_fraction=0.5,
                        object_crop=16, object_crop_fraction=0.0)
    assert off.batch(2).frames.equal(same.batch(2).frames)
    half = WindowSampler(recs, eps, 4, 8, bank, seed=3, object_region=region,
                         object_crop=16, object_crop_fraction=0.5)
    sizes = {half.batch(k).frames.shape[-1] for k in range(12)}
    assert sizes == {16, 64}


def test_crop_settings_are_checked(recs: Recordings) -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        TrainConfig.parse({"object_crop": 20, "object_crop_fraction": 0.5, "object_region": BALL})
    with pytest.raises(ConfigError, match="needs train.object_crop"):
        TrainConfig.parse({"object_crop_fraction": 0.5, "object_region": BALL})
    with pytest.raises(ConfigError, match="object_crop_fraction must be in"):
        TrainConfig.parse({"object_crop": 16, "object_crop_fraction": 1.5, "object_region": BALL})
    with pytest.raises(ConfigError, match="smaller than the frames"):
        WindowSampler(recs, [0], 4, 8, load_event_bank("train"), object_region=ObjectRegion.parse(BALL),
                      object_crop=64, object_crop_fraction=0.5)


def test_a_diffusion_model_trains_on_crops_and_plays_whole_frames(recs: Recordings, tmp_path: Path) -> None:
    """fit with half the batches as 16x16 crops: the loss is finite on both sizes, and the saved
    run plays whole 64x64 frames."""
    run = tmp_path / "run"
    data = str(recs.root)
    assert train.main(["fit", "--config", "assets/configs/breakout-diffusion.yaml", "--data", data,
                       "--out", str(run), "--steps", "6", "--device", "cpu", "--no-progress",
                       "--set", "preset=tiny", "--set", "train.object_crop=16",
                       "--set", "train.object_crop_fraction=0.5"]) == 0
    loaded = load_run(run)
    frames = loaded.start_frames[:1].float() / 127.5 - 1
    state = loaded.model.start(frames, loaded.start_actions[:1])  # type: ignore[operator]
    _, pred = loaded.model.advance(state, torch.zeros(1, dtype=torch.long), torch.zeros(1, EVENT_DIM))  # type: ignore[operator]
    assert pred.frame.shape == (1, 3, 64, 64) and torch.isfinite(pred.frame).all()


def test_appear_windows_hold_the_serve(recs: Recordings) -> None:
    """object_appear_fraction: windows whose target alone shows the ball (the serve), drawn
    into whole-frame batches; off, the batches are unchanged."""
    bank = load_event_bank("train")
    eps = list(range(len(recs.episodes)))
    region = ObjectRegion.parse(BALL)
    aimed = WindowSampler(recs, eps, 4, 64, bank, seed=3, object_region=region, object_appear_fraction=0.5)
    assert len(aimed.appear_windows) >= 1
    starts = np.concatenate([[0], aimed.cum[:-1]])
    for flat in aimed.appear_windows:
        which = int(np.searchsorted(aimed.cum, flat, side="right"))
        ep, s = recs.episodes[aimed.episodes[which]], int(flat - starts[which])
        shown = region.in_play(np.asarray(ep.frames[s: s + 5]))
        assert shown[4] and not shown[:4].any() and not np.asarray(ep.events[s: s + 4]).any()
    batch = aimed.batch(0)
    first = region.in_play(batch.frames[:, 4].numpy()) & ~region.in_play(batch.frames[:, 3].numpy())
    assert first.mean() > 0.3, first.mean()
    plain = WindowSampler(recs, eps, 4, 64, bank, seed=3)
    off = WindowSampler(recs, eps, 4, 64, bank, seed=3, object_region=region, object_appear_fraction=0.0)
    assert off.batch(1).frames.equal(plain.batch(1).frames)
    with pytest.raises(ConfigError, match="object_appear_fraction needs"):
        TrainConfig.parse({"object_appear_fraction": 0.2})


def test_crop_batches_keep_their_real_context(recs: Recordings, monkeypatch: pytest.MonkeyPatch) -> None:
    """With self-rollout on, whole-frame batches are rolled and crop batches are not: a model that
    cannot draw the ball yet would roll it out of the context the crops teach it from."""
    from models.config import resolve_config
    from models.diffusion_world import DiffusionConfig, DiffusionWorldModel

    config = resolve_config("assets/configs/breakout-diffusion.yaml",
                            ["preset=tiny", "model.rollout_steps=1", "model.rollout_fraction=1"])
    model = DiffusionWorldModel(DiffusionConfig.parse(config["model"]), 4).train()
    rolled: list[int] = []
    original = model._rolled_context

    def spy(batch, context):  # type: ignore[no-untyped-def]
        rolled.append(context.shape[-1])
        return original(batch, context)

    monkeypatch.setattr(model, "_rolled_context", spy)
    sampler = WindowSampler(recs, list(range(len(recs.episodes))), model.train_window, 4,
                            load_event_bank("train"), seed=1, object_region=ObjectRegion.parse(BALL),
                            object_crop=16, object_crop_fraction=0.5)
    sizes = []
    for k in range(8):
        batch = sampler.batch(k).to_batch("cpu")
        sizes.append(batch.frames.shape[-1])
        loss, _ = model.loss(batch)
        assert torch.isfinite(loss)
    assert 16 in sizes and 64 in sizes
    assert rolled == [64] * sizes.count(64)


def test_the_autoregressive_model_refuses_crops(recs: Recordings, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Its tokens come on a fixed grid: one error line, and no run directory is left."""
    assert train.main(["fit", "--config", "assets/configs/breakout-autoregressive.yaml",
                       "--data", str(recs.root), "--out", str(tmp_path / "ar"), "--steps", "2",
                       "--device", "cpu", "--no-progress", "--set", "preset=tiny",
                       "--set", f"train.object_region={BALL}", "--set", "train.object_crop=16",
                       "--set", "train.object_crop_fraction=0.5"]) == 2
    assert "trains on whole frames only" in capsys.readouterr().err
    assert not (tmp_path / "ar" / "model.safetensors").exists()



def test_bounce_windows_are_drawn_into_crops_and_whole_frames(recs: Recordings) -> None:
    """object_bounce_fraction 1.0: every example of the whole-frame batches is a clear window whose
    target shows the ball and whose context shows it at least twice; crop batches still come (the
    pixel test cannot check a crop); off, the batches are unchanged."""
    bank = load_event_bank("train")
    eps = list(range(len(recs.episodes)))
    region = ObjectRegion.parse(BALL)
    aimed = WindowSampler(recs, eps, 4, 16, bank, seed=3, object_region=region, object_crop=16,
                          object_crop_fraction=0.5, object_bounce_fraction=1.0)
    assert len(aimed.bounce_windows) >= 1
    sizes = set()
    for k in range(8):
        batch = aimed.batch(k)
        sizes.add(batch.frames.shape[-1])
        assert not batch.events.any()
        if batch.frames.shape[-1] == 16:
            continue  # a crop: the pixel test's rows are those of whole frames
        shown = region.in_play(batch.frames.flatten(0, 1).numpy()).reshape(16, 5)  # (B, 5)
        assert shown[:, 4].all()  # the target shows the ball...
        assert shown[:, :4].sum(1).min() >= 2  # ...and the context twice: a line to leave
    assert sizes == {16, 64}
    plain = WindowSampler(recs, eps, 4, 16, bank, seed=3, object_region=region, object_crop=16,
                          object_crop_fraction=0.5)
    off = WindowSampler(recs, eps, 4, 16, bank, seed=3, object_region=region, object_crop=16,
                        object_crop_fraction=0.5, object_bounce_fraction=0.0)
    assert off.batch(1).frames.equal(plain.batch(1).frames)
    with pytest.raises(ConfigError, match="object_bounce_fraction needs"):
        TrainConfig.parse({"object_bounce_fraction": 0.2})
    with pytest.raises(ConfigError, match="object_bounce_fraction must be in"):
        TrainConfig.parse({"object_bounce_fraction": 1.5, "object_region": BALL})

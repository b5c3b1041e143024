"""train.object_fraction: a share of each batch from clear windows where a small object (Breakout's
ball) is in play in every frame, found by `train.object_region`'s pixel test."""

from __future__ import annotations

import numpy as np
import pytest

import train
from engine.dataset import open_dataset
from engine.errors import UserError
from models.config import ConfigError
from models.data import Recordings
from models.text import load_event_bank
from models.train_config import TrainConfig
from models.windows import ObjectRegion, WindowSampler

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

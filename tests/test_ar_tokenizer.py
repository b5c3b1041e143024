"""Frame tokenizer: FSQ codes round-trip, and a tiny tokenizer learns real Breakout frames."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.autoregressive.tokenizer import FSQ, Tokenizer, TokenizerConfig

TINY = TokenizerConfig(channels=(8, 16, 16), levels=(8, 5, 5, 5))
"""The tiny preset's tokenizer (assets/configs/breakout-autoregressive.yaml)."""


def _breakout_frames(count: int) -> torch.Tensor:
    """(count, 3, 64, 64) frames in [-1, 1] from the real game under random play."""
    gym = pytest.importorskip("gymnasium")
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    env = gym.make("ALE/Breakout-v5")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    frames = [obs]
    while len(frames) < count:
        obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
        frames.append(obs)
        if term or trunc:
            frames.append(env.reset()[0])
    env.close()
    x = torch.from_numpy(np.stack(frames[:count])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(x, size=(64, 64), mode="area")


def test_fsq_codes_round_trip():
    fsq = FSQ((8, 5, 5, 5))
    q = fsq.quantize(torch.randn(100, 4) * 3)
    codes = fsq.codes(q)
    assert int(codes.min()) >= 0 and int(codes.max()) < fsq.codebook_size == 1000
    assert torch.equal(fsq.values(codes), q)
    every = torch.arange(fsq.codebook_size)
    assert torch.equal(fsq.codes(fsq.values(every)), every)


def test_tiny_tokenizer_learns_real_breakout_frames():
    """250 steps of batch 16 (about 15 s of one core) reach >= 29 dB on 256 real frames.

    Measured: 31.9 dB. For scale, always answering the mean frame scores 32.6 dB on this nearly
    static random-play data, so this checks learning, not quality: the `small` tokenizer after
    600 steps is measured in checkpoints/README.md."""
    torch.manual_seed(0)
    frames = _breakout_frames(256)
    tok = Tokenizer(TINY)
    opt = torch.optim.AdamW(tok.parameters(), lr=3e-3)
    for _ in range(250):
        idx = torch.randint(1, len(frames), (16,))
        loss, _ = tok.loss(frames[idx], frames[idx - 1])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        codes = tok.encode(frames)
        recon = tok.decode(codes)
    assert codes.shape == (256, 8, 8)
    psnr = float(10 * torch.log10(4 / F.mse_loss(recon, frames)))
    assert psnr >= 29.0, psnr


def test_resolution_must_fit_the_downsampling():
    from engine.errors import UserError
    with pytest.raises(UserError, match="not divisible"):
        Tokenizer(TokenizerConfig(channels=(8, 8, 8, 8, 8, 8, 8)), resolution=64)

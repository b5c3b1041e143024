"""Neural play through the same loop: headless via play.py, windowed with split view and presets.

The loop does not care whether the model is any good, so the run here is an untrained tiny
diffusion model saved the way `train.py fit` saves one (what matters is save -> open -> play).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pygame
import pytest
import torch
import torch.nn.functional as F

from engine.controls import InputState
from engine.display import Display, DisplayConfig
from engine.games import make_simulator
from engine.keymap import Keymap, pygame_key_names
from engine.loop import FrameLoop, LoopConfig
from models.checkpoint import save_run
from models.config import resolve_config
from models.diffusion_world import DiffusionWorldModel
from models.neural_sim import open_neural_simulator

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    real = make_simulator("breakout", audio=False, seed=0)
    frames = [real.reset(0)] + [real.step(0).frame for _ in range(6)]
    real.close()
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(64, 64), mode="area").round().to(torch.uint8)
    config = resolve_config(ROOT / "assets/configs/breakout-diffusion.yaml", ["preset=tiny"])
    torch.manual_seed(0)
    model = DiffusionWorldModel.from_config(config, real.spec)
    c = model.context_frames
    out = tmp_path_factory.mktemp("run") / "bk"
    save_run(out, ema_model=model, config=config, spec=real.spec, start_frames=x[None, :c],
             start_actions=torch.zeros(1, c - 1, dtype=torch.long), event_bank={}, stats={"step": 0})
    return out


def run_play(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(ROOT / "play.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_play_cli_headless_neural(run_dir: Path, tmp_path: Path) -> None:
    from engine.dataset import open_dataset

    proc = run_play("--checkpoint", str(run_dir), "--headless", "--max-steps", "12",
                    "--autopilot", "random", "--seed", "0", "--device", "cpu",
                    "--record", str(tmp_path / "rec"))
    assert proc.returncode == 0, proc.stderr
    assert "played 12 steps" in proc.stdout
    ds = open_dataset(tmp_path / "rec")  # neural play records like real play, at model resolution
    assert ds.num_steps == 12 and ds.load(0).observations.shape[1:] == (64, 64, 3)


def test_play_cli_neural_bad_inputs(run_dir: Path, tmp_path: Path) -> None:
    proc = run_play("--checkpoint", str(tmp_path / "missing"), "--headless", "--max-steps", "2")
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    proc = run_play("--checkpoint", str(run_dir), "--game", "pong", "--headless",
                    "--max-steps", "2", "--device", "cpu")
    assert proc.returncode == 2 and "breakout model" in proc.stderr


def tap(code: int) -> None:
    for kind in (pygame.KEYDOWN, pygame.KEYUP):
        pygame.event.post(pygame.event.Event(kind, key=code, mod=0, unicode="", scancode=0))


def test_windowed_neural_split_view_and_sampler_cycle(run_dir: Path) -> None:
    sim = open_neural_simulator(run_dir, device="cpu")
    seen: dict[str, object] = {"psnr": []}
    spec = sim.spec

    def script(i: int, loop: FrameLoop) -> None:
        if i == 3:
            seen["sampler0"] = sim.sampler
            tap(pygame.K_F2)
        elif i == 8:
            seen["sampler1"] = sim.sampler
            tap(pygame.K_TAB)
        out = loop.last
        if loop.split and out is not None and out.psnr is not None:
            seen["psnr"].append((out.step is None, out.psnr))  # type: ignore[union-attr]
        if i == 50:
            seen["hud"] = loop.hud_lines()
            pygame.event.post(pygame.event.Event(pygame.QUIT))

    display = Display(DisplayConfig(scale=4), (64, 64))
    real_spec = make_simulator("breakout", audio=False).spec
    loop = FrameLoop(sim, LoopConfig(seed=5), display=display, controls=InputState(pygame_key_names()),
                     keymap=Keymap.for_spec(spec), on_frame=lambda i: script(i, loop),
                     make_real=lambda: make_simulator(real_spec.name, audio=False))
    try:
        summary = loop.run()
    finally:
        display.close()
        sim.close()
    presets = list(sim.sampler_presets)
    assert seen["sampler1"] == presets[(presets.index(str(seen["sampler0"])) + 1) % len(presets)]
    psnrs = seen["psnr"]
    assert isinstance(psnrs, list) and psnrs
    # the split reset starts the model from the real game's own frames: identical at first
    assert psnrs[0] == (True, 99.0)
    assert summary.steps > 0
    hud = seen["hud"]
    assert isinstance(hud, list) and "model diffusion" in hud[2] and "PSNR" in hud[2]
    assert f"sampler {seen['sampler1']}" in hud[2]

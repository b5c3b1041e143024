"""Dynamics events change the real simulation: CarRacing ice/turbo physics, Breakout RAM (lives, bricks)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from engine.events import EventLayer, load_catalog
from engine.games import make_simulator
from engine.simulator import WorldEvent

GAS, LEFT = 3, 1  # CarRacing discrete actions (assets/games.yaml)


def _lateral_slip(event: str | None) -> float:
    """Mean sideways hull speed while steering left after 15 steps of gas; the event starts at the turn."""
    sim = EventLayer(make_simulator("carracing", seed=0), seed=0)
    sim.reset(0)
    slip = []
    for t in range(27):
        events = [WorldEvent(event, event)] if event and t >= 15 else []
        sim.step(GAS if t < 15 else LEFT, events)
        if t >= 15:
            cs = sim.car_state()
            heading = np.array([-np.sin(cs.angle), np.cos(cs.angle)])
            slip.append(abs(cs.velocity[0] * heading[1] - cs.velocity[1] * heading[0]))
    sim.close()
    return float(np.mean(slip))


def test_ice_increases_lateral_slip():
    dry, icy = _lateral_slip(None), _lateral_slip("ice")
    assert icy > 2 * dry, (dry, icy)


def test_turbo_accelerates_harder_and_physics_restore_at_end():
    speeds = {}
    for event in (None, "turbo"):
        sim = EventLayer(make_simulator("carracing", seed=0), seed=0)
        sim.reset(0)
        for _ in range(25):
            sim.step(GAS, [WorldEvent(event)] if event else [])
        speeds[event] = sim.car_state().speed
        if event:
            assert sim.sim.engine_power_scale > 1
            sim.step(GAS, [])  # the event ends
            assert sim.sim.engine_power_scale == 1.0 and sim.sim.friction_scale == 1.0
        sim.close()
    assert speeds["turbo"] > 1.2 * speeds[None], speeds


def test_ice_and_turbo_combine_and_reset_clears():
    sim = EventLayer(make_simulator("carracing", seed=0), seed=0)
    sim.reset(0)
    sim.step(GAS, [WorldEvent("ice"), WorldEvent("turbo")])
    assert np.isclose(sim.sim.friction_scale, 0.25 * 1.6) and sim.sim.engine_power_scale == 3.0
    sim.step(GAS, [WorldEvent("turbo")])
    assert np.isclose(sim.sim.friction_scale, 1.6)
    sim.reset(1)
    assert sim.sim.friction_scale == 1.0 and sim.sim.engine_power_scale == 1.0
    sim.close()


def test_breakout_extra_life_writes_ram_once_per_onset():
    sim = EventLayer(make_simulator("breakout", seed=0, audio=False), seed=0)
    sim.reset(0)
    lives0 = sim.step(0).info["lives"]
    assert int(sim.ram()[57]) == lives0  # RAM byte 57 is the lives counter (checked against ALE)
    life = [WorldEvent("extra_life", "one more life")]
    assert sim.step(0, life).info["lives"] == lives0 + 1
    assert sim.step(0, life).info["lives"] == lives0 + 1  # still active: no second life
    sim.step(0)  # ends
    assert sim.step(0, life).info["lives"] == lives0 + 2  # a new onset gives another
    sim.close()


def test_events_for_other_games_are_ignored():
    sim = EventLayer(make_simulator("breakout", seed=0, audio=False), seed=0)
    sim.reset(0)
    plain = sim.step(0).frame
    step = sim.step(0, [WorldEvent("ice"), WorldEvent("no_such_event")])
    assert sim.active_names == ()
    assert step.frame.shape == plain.shape
    sim.close()


def _brick_pixels(frame: np.ndarray) -> int:
    return int((frame[57:93] != 0).any(axis=2).sum())  # rows of Breakout's six brick bands


def test_breakout_rebuild_wall_restores_every_brick():
    spec = load_catalog().get("rebuild_wall")
    sim = EventLayer(make_simulator("breakout", seed=1, audio=False), seed=1)
    full = _brick_pixels(sim.reset(1))
    st = sim.step(1)
    assert tuple(sim.ram()[:36]) == spec.ram[0].set  # the yaml holds the start-of-game bitmap
    for t in range(400):  # a simple tracker breaks some bricks
        ram = sim.ram()
        ball, paddle = int(ram[99]), int(ram[72])
        st = sim.step(1 if t % 50 == 0 else 2 if ball > paddle + 10 else 3 if ball < paddle - 5 else 0)
        if _brick_pixels(st.frame) < full - 200:
            break
    broken = _brick_pixels(st.frame)
    assert broken < full and not st.terminated
    st = sim.step(0, [WorldEvent("rebuild_wall", "rebuild the wall")])
    assert _brick_pixels(st.frame) == full > broken
    sim.close()


def test_dynamics_signal_benchmark_replays_exactly_and_sees_ice(tmp_path: Path) -> None:
    """benchmarks/dynamics_signal.py: exact replays (checked inside), ice moves the frames more
    with every step after its onset."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamics_signal.py"
    out = tmp_path / "signal.json"
    proc = subprocess.run([sys.executable, str(script), "--episodes", "1", "--onsets", "40", "--horizon", "4",
                           "--events", "ice", "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    real = json.loads(out.read_text())["ice"]["real"]  # PSNR(real with ice, real without) per step
    assert len(real) == 4 and real[3] < real[0] and real[3] < 60, real
    bad = subprocess.run([sys.executable, str(script), "--events", "rain"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: 'rain' is not a dynamics event (known: ice, turbo, extra_life")
    mixed = subprocess.run([sys.executable, str(script), "--events", "ice", "extra_life"], capture_output=True,
                           text=True, timeout=60)
    assert mixed.returncode == 2 and "of one game" in mixed.stderr


def test_dynamics_signal_benchmark_replays_breakout_with_an_extra_life(tmp_path: Path) -> None:
    """The same counterfactuals on the Atari emulator: the extra life changes only the life
    counter, a few pixels, from its onset on."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamics_signal.py"
    out = tmp_path / "signal.json"
    proc = subprocess.run([sys.executable, str(script), "--events", "extra_life", "--episodes", "1",
                           "--onsets", "30", "--horizon", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    real = result["extra_life"]["real"]
    assert result["game"] == "breakout" and len(real) == 3
    assert all(30 < x < 60 for x in real), real  # a change, and a small one

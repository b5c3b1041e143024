"""The real simulators: Atari frame-by-frame audio, determinism, RAM access, CarRacing physics."""

import numpy as np
import pytest

from engine.games import make_simulator
from engine.real import AtariSimulator, CarRacingSimulator
from engine.simulator import Simulator


def _rollout(sim: Simulator, seed: int, steps: int, action_seed: int = 1) -> tuple[np.ndarray, list[float]]:
    rng = np.random.default_rng(action_seed)
    frames = [sim.reset(seed=seed)]
    rewards = []
    for _ in range(steps):
        s = sim.step(int(rng.integers(sim.spec.num_actions)))
        frames.append(s.frame)
        rewards.append(s.reward)
    return np.stack(frames), rewards


def test_atari_is_a_simulator_with_ram_and_lives() -> None:
    sim = make_simulator("breakout", seed=0)
    assert isinstance(sim, Simulator) and isinstance(sim, AtariSimulator)
    frame = sim.reset()
    assert frame.shape == (210, 160, 3) and frame.dtype == np.uint8
    step = sim.step(1)
    assert step.info["lives"] == 5
    ram = sim.ram()
    assert ram.shape == (128,) and ram.dtype == np.uint8
    sim.set_ram(0x10, 77)
    assert sim.ram()[0x10] == 77 and sim.ale.getRAM()[0x10] == 77
    with pytest.raises(ValueError):
        sim.step(4)  # breakout has 4 actions


@pytest.mark.parametrize("frameskip", [1, 4])
def test_atari_audio_keeps_every_frame(frameskip: int) -> None:
    sim = make_simulator("pong", frameskip=frameskip, seed=0)
    sim.reset()
    chunks = []
    for i in range(400 // frameskip):
        s = sim.step(i % sim.spec.num_actions)
        assert s.audio is not None and s.audio.dtype == np.uint8
        assert s.audio.shape == (frameskip * 512,)
        chunks.append(s.audio)
    audio = np.concatenate(chunks)
    assert audio.min() != audio.max(), "Pong makes sound within 400 frames"


def test_atari_audio_equals_frameskip_one_stream() -> None:
    """Frameskip 4 audio is exactly the frameskip-1 stream: no frame's samples are lost."""
    a = make_simulator("pong", frameskip=4, seed=0)
    b = make_simulator("pong", frameskip=1, seed=0)
    a.reset(seed=3)
    b.reset(seed=3)
    for i in range(60):
        sa = a.step(i % 3)
        sb = np.concatenate([b.step(i % 3).audio for _ in range(4)])  # type: ignore[misc]
        assert np.array_equal(sa.audio, sb)
        assert np.array_equal(sa.frame, b.ale.getScreenRGB())


def test_atari_no_audio_fast_path() -> None:
    sim = make_simulator("breakout", audio=False)
    sim.reset(seed=0)
    assert sim.step(0).audio is None


def test_atari_seeded_determinism_with_sticky_actions() -> None:
    sim = make_simulator("breakout", sticky=0.25)
    f1, r1 = _rollout(sim, seed=5, steps=150)
    f2, r2 = _rollout(sim, seed=5, steps=150)
    assert np.array_equal(f1, f2) and r1 == r2
    f3, _ = _rollout(sim, seed=6, steps=150)
    assert not np.array_equal(f1, f3), "sticky actions draw from the seeded ALE RNG"


def test_carracing_frames_determinism_and_state() -> None:
    sim = make_simulator("carracing", seed=0)
    assert isinstance(sim, CarRacingSimulator) and isinstance(sim, Simulator)
    f1, r1 = _rollout(sim, seed=2, steps=30, action_seed=3)
    assert f1.shape == (31, 96, 96, 3) and f1.dtype == np.uint8
    f2, r2 = _rollout(sim, seed=2, steps=30, action_seed=3)
    assert np.array_equal(f1, f2) and r1 == r2
    st = sim.car_state()
    assert st.waypoints.ndim == 2 and st.waypoints.shape[1] == 2 and len(st.waypoints) > 50
    assert 0 <= st.next_waypoint < len(st.waypoints)
    assert np.isfinite(st.speed) and st.position.shape == (2,)
    sim.close()


def _gas(sim: CarRacingSimulator, steps: int) -> float:
    """Speed after `steps` of full gas from the start of track seed 1."""
    sim.reset(seed=1)
    for _ in range(steps):
        sim.step(sim.spec.action_meanings.index("GAS"))
    return sim.car_state().speed


def test_set_physics_changes_engine_power() -> None:
    sim = make_simulator("carracing")
    assert isinstance(sim, CarRacingSimulator)
    base = _gas(sim, 40)
    sim.set_physics(engine_power_scale=0.4)
    weak = _gas(sim, 40)
    # Below ~50 units/s full gas is traction-limited, so more power shows as wheel spin,
    # and more power with more grip as faster acceleration.
    sim.set_physics(engine_power_scale=2.0, friction_scale=1.5)
    turbo = _gas(sim, 25)
    sim.set_physics()
    assert _gas(sim, 40) == pytest.approx(base), "scales reset to 1 restore the car"
    assert weak < 0.85 * base, (weak, base)
    assert turbo > 1.3 * _gas(sim, 25), turbo


def test_set_physics_ice_makes_the_car_slide() -> None:
    """Same entry speed, same steering: on ice the car slides on instead of turning."""
    sim = make_simulator("carracing")
    assert isinstance(sim, CarRacingSimulator)
    left = sim.spec.action_meanings.index("LEFT")

    def turn(friction: float) -> tuple[float, float]:
        sim.set_physics()
        _gas(sim, 15)
        v0 = sim.car_state().velocity
        sim.set_physics(friction_scale=friction)
        slip = []
        for _ in range(15):
            sim.step(left)
            st = sim.car_state()
            side = np.array([np.cos(st.angle), np.sin(st.angle)])  # hull's local +x axis
            slip.append(abs(float(np.dot(st.velocity, side))) / max(st.speed, 1e-6))
        v1 = sim.car_state().velocity
        turned = np.arctan2(v1[1], v1[0]) - np.arctan2(v0[1], v0[0])
        return float(np.mean(slip)), abs(float((turned + np.pi) % (2 * np.pi) - np.pi))

    slip, turned = turn(1.0)
    ice_slip, ice_turned = turn(0.2)
    assert ice_slip > 3 * slip, (slip, ice_slip)
    assert ice_turned < 0.5 * turned, (turned, ice_turned)

"""Autopilots on the real games: scripted players read RAM / car state and beat random play."""

import numpy as np
import pytest

from engine.autopilot import BreakoutPlayer, StickyRandom, make_policy
from engine.breakout_view import read_breakout
from engine.errors import UserError
from engine.games import find_game, make_simulator
from engine.simulator import GameSpec, Simulator, Step


def _play(game: str, kind: str, steps: int, seed: int = 0) -> tuple[float, list[int], Simulator]:
    sim = make_simulator(game, seed=seed, audio=False)
    policy = make_policy(kind, sim.spec, seed=seed)
    frame = sim.reset(seed=seed)
    total, actions = 0.0, []
    for _ in range(steps):
        a = policy.act(frame, sim)
        assert 0 <= a < sim.spec.num_actions
        s = sim.step(a)
        frame, total = s.frame, total + s.reward
        actions.append(a)
        if s.terminated or s.truncated:
            frame = sim.reset()
            policy.reset()
    return total, actions, sim


def test_breakout_ram_addresses_track_the_screen() -> None:
    """ram[72] paddle x and ram[99] ball x line up with the pixels the autopilot assumes."""
    sim = make_simulator("breakout", seed=0, audio=False)
    sim.reset(seed=0)
    assert hasattr(sim, "ram")
    checked = 0
    for i in range(120):
        s = sim.step(1 if i % 25 == 0 else 2 + (i // 10) % 2)
        ram = sim.ram()  # type: ignore[attr-defined]
        xs = np.nonzero(s.frame[190, 8:152].sum(1))[0] + 8
        # Away from the walls the paddle is fully visible; skip rows the ball also crosses.
        if len(xs) and xs.max() - xs.min() < 20 and 60 < ram[72] < 180:
            assert abs(xs.mean() - (int(ram[72]) - 38.6)) < 3
        ball = np.nonzero(s.frame[94:188, 8:152].sum(2))
        if ram[101] > 0 and len(ball[1]):
            assert abs(ball[1].mean() + 8 - (int(ram[99]) - 48.5)) < 3
            checked += 1
    assert checked > 10


def test_scripted_breakout_beats_random() -> None:
    steps = 1500
    scripted, acts, _ = _play("breakout", "scripted", steps)
    random_score, _, _ = _play("breakout", "random", steps)
    assert scripted >= 10, scripted
    assert scripted > 3 * max(random_score, 1.0), (scripted, random_score)
    assert len(set(acts)) == 4, "uses FIRE, LEFT, RIGHT and NOOP"


def test_scripted_pong_scores_points() -> None:
    # Random Pong almost never returns a serve; the scripted paddle does and wins points.
    scripted, _, _ = _play("pong", "scripted", 1200)
    random_score, _, _ = _play("pong", "random", 1200)
    assert scripted > random_score + 5, (scripted, random_score)


def test_scripted_carracing_follows_the_track() -> None:
    steps = 150
    sim = make_simulator("carracing", seed=0)
    policy = make_policy("scripted", sim.spec, seed=0)
    frame = sim.reset(seed=0)
    on_road, names = 0, set()
    for _ in range(steps):
        a = policy.act(frame, sim)
        names.add(sim.spec.action_meanings[a])
        frame = sim.step(a).frame
        st = sim.car_state()  # type: ignore[attr-defined]
        on_road += np.min(np.linalg.norm(st.waypoints - st.position, axis=1)) < 6.7  # half width
    assert on_road > 0.7 * steps, on_road
    assert st.tiles_visited > 25, st.tiles_visited
    assert "GAS" in names and ({"GAS+LEFT", "GAS+RIGHT", "LEFT", "RIGHT"} & names)
    random_sim = make_simulator("carracing", seed=0)
    pol = make_policy("random", random_sim.spec, seed=0)
    f = random_sim.reset(seed=0)
    for _ in range(steps):
        f = random_sim.step(pol.act(f, random_sim)).frame
    assert random_sim.car_state().tiles_visited < st.tiles_visited / 2  # type: ignore[attr-defined]


def test_generic_and_random_policies_are_seeded() -> None:
    _, a1, _ = _play("mspacman", "scripted", 200, seed=4)
    _, a2, _ = _play("mspacman", "scripted", 200, seed=4)
    _, a3, _ = _play("mspacman", "scripted", 200, seed=5)
    assert a1 == a2 and a1 != a3
    _, r1, _ = _play("boxing", "random", 200, seed=1)
    # sticky-random: consecutive repeats are common, but it is not constant
    repeats = np.mean(np.array(r1[1:]) == np.array(r1[:-1]))
    assert 0.5 < repeats < 0.98 and len(set(r1)) > 5


class _OpaqueSim:
    """A simulator the scripted players cannot read (like a world model): no RAM, no car."""

    def __init__(self, spec: GameSpec) -> None:
        self.spec = spec

    def reset(self, seed: int | None = None) -> np.ndarray:
        return np.zeros((64, 64, 3), np.uint8)

    def step(self, action: int, events=()) -> Step:  # type: ignore[no-untyped-def]
        return Step(frame=np.zeros((64, 64, 3), np.uint8), reward=0.0, terminated=False, truncated=False)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("game", ["pong", "carracing"])
def test_scripted_falls_back_to_sticky_random(game: str) -> None:
    spec = find_game(game)
    sim = _OpaqueSim(spec)
    policy = make_policy("scripted", spec, seed=0)
    acts = [policy.act(np.zeros((64, 64, 3), np.uint8), sim) for _ in range(300)]
    assert len(set(acts)) == spec.num_actions
    assert isinstance(policy.fallback, StickyRandom)  # type: ignore[attr-defined]


def _small(frame: np.ndarray) -> np.ndarray:
    from models.data import resize_frames

    return resize_frames(frame[None], 64)[0].transpose(1, 2, 0)


def test_breakout_view_finds_paddle_ball_and_bricks_at_both_sizes() -> None:
    """read_breakout agrees with the RAM at 210x160 and at 64x64, and sees bricks break."""
    sim = make_simulator("breakout", seed=0, audio=False)
    policy = make_policy("scripted", sim.spec, seed=0)
    frame = sim.reset(seed=0)
    balls = breaks = 0
    for _ in range(400):
        s = sim.step(policy.act(frame, sim))
        ram = sim.ram()  # type: ignore[attr-defined]
        xs = np.nonzero(s.frame[183:196, 8:152].sum((0, 2)))[0]
        alone = len(xs) > 0 and xs.max() - xs.min() < 20  # no ball near the paddle's rows
        for f in (s.frame, _small(s.frame)):
            v = read_breakout(f)
            if v.paddle_x is not None and alone and 60 < ram[72] < 180:  # away from the walls
                assert abs(v.paddle_x * 160 - (int(ram[72]) - 38.6)) < 4
            if ram[101] > 0 and v.ball is not None and f is s.frame:
                assert abs(v.ball[0] * 160 - (int(ram[99]) - 48.5)) < 3
                balls += 1
        if s.reward > 0:  # a brick is gone in the frame that scores, at both sizes
            for f0, f1 in ((frame, s.frame), (_small(frame), _small(s.frame))):
                lost = read_breakout(f0).wall - read_breakout(f1).wall
                assert 0.5 < lost.max() < 1.5 and lost.sum() < 1.5, lost
            breaks += 1
        frame = s.frame
    assert balls > 100 and breaks > 3, (balls, breaks)


def test_breakout_player_reads_the_pixels_of_a_world_model() -> None:
    """Given no RAM (a world model), the Breakout player follows the ball it sees, at 64x64."""
    spec = find_game("breakout")
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[57:59, 8:14] = (200, 72, 72)  # the paddle at the left
    frame[40, 50] = (90, 30, 30)  # a dim ball on the right
    policy = make_policy("scripted", spec, seed=0)
    policy.epsilon = 0.0  # type: ignore[attr-defined]
    assert spec.action_meanings[policy.act(frame, _OpaqueSim(spec))] == "RIGHT"
    frame[40, 50] = 0
    frame[40, 6] = (90, 30, 30)
    frame[57:59, 8:14] = 0
    frame[57:59, 40:46] = (200, 72, 72)
    assert spec.action_meanings[policy.act(frame, _OpaqueSim(spec))] == "LEFT"
    frame[40, 6] = 0  # the ball gone: heads for where it was a few steps, then serves
    acts = [spec.action_meanings[policy.act(frame, _OpaqueSim(spec))] for _ in range(12)]
    assert acts[0] == "LEFT" and set(acts[4:]) == {"FIRE", "NOOP"}, acts


def test_pixel_breakout_player_plays_the_real_game() -> None:
    """Reading 64x64 frames alone, as it does in neural play, the player still scores."""
    sim = make_simulator("breakout", seed=0, audio=False)
    policy = BreakoutPlayer(sim.spec, np.random.default_rng(0), pixels=True)
    policy.reset()
    frame, total = _small(sim.reset(seed=0)), 0.0
    for _ in range(600):
        s = sim.step(policy.act(frame, sim))
        frame, total = _small(s.frame), total + s.reward
        if s.terminated:
            break
    random_score, _, _ = _play("breakout", "random", 600)
    assert total >= 8 and total > 2 * random_score, (total, random_score)


def test_unknown_policy_kind() -> None:
    with pytest.raises(UserError, match="unknown policy 'smart'"):
        make_policy("smart", find_game("pong"), seed=0)

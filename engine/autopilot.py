"""Players that need no human: sticky-random, and scripted players that read the real game.

`make_policy(kind, spec, seed)` returns a `Policy` (`reset()`, `act(frame, sim) -> int`).
Scripted players read RAM (Breakout, Pong) or the car state (CarRacing) from the real
simulators and make deliberate mistakes now and then (epsilon bursts) so that recorded data
covers failures too. Given a simulator they cannot read (a world model), they play sticky-random;
the Breakout player reads the frame instead (engine/breakout_view.py).

RAM addresses were found by regressing on-screen object positions against RAM bytes
(tests/test_games_autopilot.py keeps them honest):
  Breakout: ram[72] paddle x (pixel centre = ram - 38.6), ram[99] ball x (pixel = ram - 48.5),
            ram[101] ball y (0 while no ball is in play).
  Pong:     ram[51] own (right, green) paddle y (pixel centre = ram - 2.5), ram[49] ball x
            (pixel = ram - 48.5), ram[54] ball y (pixel = ram - 12.7); RIGHT moves up.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

from engine.breakout_view import read_breakout
from engine.errors import UserError
from engine.simulator import GameSpec, Simulator

POLICY_KINDS = ("random", "scripted")


class Policy(Protocol):
    """Chooses the next discrete action; `reset()` at every episode start."""

    def reset(self) -> None: ...

    def act(self, frame: np.ndarray, sim: Simulator) -> int: ...


class StickyRandom:
    """Uniform random actions, each repeated with probability `repeat` (human-like holds)."""

    def __init__(self, num_actions: int, rng: np.random.Generator, repeat: float = 0.75,
                 weights: np.ndarray | None = None) -> None:
        self.num_actions = num_actions
        self.rng = rng
        self.repeat = repeat
        self.p = None if weights is None else weights / weights.sum()
        self.prev = 0

    def reset(self) -> None:
        self.prev = 0

    def act(self, frame: np.ndarray, sim: Simulator) -> int:
        if self.rng.random() >= self.repeat:
            self.prev = int(self.rng.choice(self.num_actions, p=self.p))
        return self.prev


class _Scripted:
    """Shared machinery: epsilon mistake bursts and the sticky-random fallback."""

    max_burst = 8
    """Longest mistake, in agent steps."""

    def __init__(self, spec: GameSpec, rng: np.random.Generator, epsilon: float = 0.05) -> None:
        self.spec = spec
        self.rng = rng
        self.epsilon = epsilon
        self.fallback = StickyRandom(spec.num_actions, rng)
        self._burst_left = 0
        self._burst_action = 0
        self.idx = {m: i for i, m in enumerate(spec.action_meanings)}

    def reset(self) -> None:
        self._burst_left = 0
        self.fallback.reset()

    def readable(self, sim: Simulator) -> bool:  # overridden
        return False

    def decide(self, frame: np.ndarray, sim: Any) -> int:  # overridden
        return 0

    def act(self, frame: np.ndarray, sim: Simulator) -> int:
        if not self.readable(sim):
            return self.fallback.act(frame, sim)
        if self._burst_left == 0 and self.rng.random() < self.epsilon:
            # A mistake: hold one random action for a few steps.
            self._burst_left = int(self.rng.integers(1, self.max_burst))
            self._burst_action = int(self.rng.integers(self.spec.num_actions))
        if self._burst_left > 0:
            self._burst_left -= 1
            return self._burst_action
        return self.decide(frame, sim)

    def _a(self, meaning: str) -> int:
        return self.idx.get(meaning, 0)


def _has_ram(sim: Simulator) -> bool:
    return callable(getattr(sim, "ram", None))


class BreakoutPlayer(_Scripted):
    """Keeps the paddle under the ball (led by its x velocity); FIRE when no ball is in play.

    Reads the RAM of the real game; a world model (or `pixels=True`) is read from the frame
    instead (engine/breakout_view.py), so neural Breakout gets the same player.
    """

    tolerance = 4 / 160
    """Paddle-to-target distance (share of the width) within which the paddle rests."""

    def __init__(self, spec: GameSpec, rng: np.random.Generator, pixels: bool = False) -> None:
        super().__init__(spec, rng)
        self.pixels = pixels

    def reset(self) -> None:
        super().reset()
        self.prev_ball_x: float | None = None
        self.offset = 0.0
        self.t = 0
        self.unseen = 0
        self.target: float | None = None

    def readable(self, sim: Simulator) -> bool:
        return True

    def _serve(self) -> int:
        """No ball in play: a fresh aim offset so rebound angles vary; alternate FIRE/NOOP."""
        self.prev_ball_x = None
        self.offset = float(self.rng.uniform(-5, 5))
        return self._a("FIRE") if self.t % 2 else self._a("NOOP")

    def decide_from_pixels(self, frame: np.ndarray) -> int:
        seen = read_breakout(frame)
        if seen.ball is None:
            # A model's ball can fade for a step or two: keep heading for the last target.
            self.unseen += 1
            if self.unseen > 3 or self.target is None:
                self.target = None
                return self._serve()
        else:
            self.unseen = 0
            x = seen.ball[0]
            vx = 0.0 if self.prev_ball_x is None else x - self.prev_ball_x
            self.prev_ball_x = x
            self.target = x + 2.0 * vx + self.offset / 160
        if seen.paddle_x is None:
            return self._a("NOOP")
        if seen.paddle_x < self.target - self.tolerance:
            return self._a("RIGHT")
        if seen.paddle_x > self.target + self.tolerance:
            return self._a("LEFT")
        return self._a("NOOP")

    def decide(self, frame: np.ndarray, sim: Any) -> int:
        self.t += 1
        if self.pixels or not _has_ram(sim):
            return self.decide_from_pixels(frame)
        ram = sim.ram()
        paddle, ball_x, ball_y = int(ram[72]), int(ram[99]), int(ram[101])
        if ball_y == 0:
            return self._serve()
        vx = 0 if self.prev_ball_x is None else ball_x - self.prev_ball_x
        self.prev_ball_x = ball_x
        target = ball_x - 9.9 + 2.0 * vx + self.offset  # paddle-ram units aligned with the ball
        if paddle < target - 4:
            return self._a("RIGHT")
        if paddle > target + 4:
            return self._a("LEFT")
        return self._a("NOOP")


class PongPlayer(_Scripted):
    """Moves the right paddle to where the ball will cross it (bounces off the walls included)."""

    paddle_x = 188  # ram[49] of the ball when it reaches our paddle
    wall_top, wall_bottom = 46, 207  # ram[54] range of the ball

    def reset(self) -> None:
        super().reset()
        self.prev: tuple[int, int] | None = None

    def readable(self, sim: Simulator) -> bool:
        return _has_ram(sim)

    def decide(self, frame: np.ndarray, sim: Any) -> int:
        ram = sim.ram()
        paddle, ball_x, ball_y = int(ram[51]), int(ram[49]), int(ram[54])
        target = 115.0  # centre while no ball is in play
        if ball_x > 0 and ball_y > 0:
            y = float(ball_y)
            if self.prev is not None and ball_x > self.prev[0]:
                vx, vy = ball_x - self.prev[0], ball_y - self.prev[1]
                y = ball_y + vy * (self.paddle_x - ball_x) / vx
                # Fold the straight-line estimate back into the field (mirror at the walls).
                lo, span = self.wall_top, self.wall_bottom - self.wall_top
                y = (y - lo) % (2 * span)
                y = lo + (y if y < span else 2 * span - y)
            self.prev = (ball_x, ball_y)
            target = y - 10.2  # paddle-ram units aligned with the ball
        else:
            self.prev = None
        up, down = self._a("RIGHT"), self._a("LEFT")
        if paddle > target + 4:
            return up
        if paddle < target - 4:
            return down
        return self._a("NOOP")


class GenericAtariPlayer(_Scripted):
    """Any other ALE game: sticky-random biased towards actions that fire."""

    def __init__(self, spec: GameSpec, rng: np.random.Generator) -> None:
        super().__init__(spec, rng, epsilon=0.0)
        w = np.array([3.0 if "FIRE" in m else 1.0 for m in spec.action_meanings])
        self.biased = StickyRandom(spec.num_actions, rng, repeat=0.7, weights=w)

    def reset(self) -> None:
        super().reset()
        self.biased.reset()

    def readable(self, sim: Simulator) -> bool:
        return True

    def decide(self, frame: np.ndarray, sim: Any) -> int:
        return self.biased.act(frame, sim)


class CarDriver(_Scripted):
    """Steers toward a waypoint a few ahead on the track centre line at a moderate speed."""

    lookahead = 6
    max_burst = 4  # at 25 steps/s a longer full-lock burst spins the car off the road
    cruise_speed = 38.0
    corner_speed = 22.0
    recover_speed = 12.0

    def reset(self) -> None:
        super().reset()
        self.cruise = self.cruise_speed * float(self.rng.uniform(0.85, 1.15))

    def readable(self, sim: Simulator) -> bool:
        return callable(getattr(sim, "car_state", None))

    def decide(self, frame: np.ndarray, sim: Any) -> int:
        st = sim.car_state()
        pts, n = st.waypoints, len(st.waypoints)
        off_road = float(np.linalg.norm(pts[st.nearest] - st.position)) > 6.0  # half width 6.7
        look = 2 if off_road else self.lookahead
        target = pts[(st.nearest + look) % n]
        far = pts[(st.nearest + 3 * self.lookahead) % n]
        heading = math.atan2(math.cos(st.angle), -math.sin(st.angle))  # direction of travel
        err = _wrap(math.atan2(target[1] - st.position[1], target[0] - st.position[0]) - heading)
        bend = abs(_wrap(math.atan2(far[1] - target[1], far[0] - target[0]) - heading))
        want = self.cruise
        if bend > 0.6:
            want = self.corner_speed
        if off_road or abs(err) > 1.2:
            want = self.recover_speed  # grass has 60% grip: crawl back to the road
        # Positive err = target is counter-clockwise = to the car's left.
        steer = "LEFT" if err > 0.08 else "RIGHT" if err < -0.08 else ""
        if st.speed < want:  # keep rolling even when lost: a car only turns while moving
            pedal = "GAS"
        elif st.speed > want + 10:
            pedal = "BRAKE"
        else:
            pedal = ""
        name = "+".join(p for p in (pedal, steer) if p) or "NOOP"
        return self._a(name)


def _wrap(a: float) -> float:
    """Angle to (-pi, pi]."""
    return (a + math.pi) % (2 * math.pi) - math.pi


def make_policy(kind: str, spec: GameSpec, seed: int | None = None) -> Policy:
    """A player for `spec`: kind 'random' (sticky-random) or 'scripted' (game-aware).

    Args:
        kind: "random" or "scripted".
        spec: the game (from engine.games.find_game or a simulator's .spec).
        seed: seeds the player's own randomness (same seed + same game -> same play).
    """
    rng = np.random.default_rng(seed)
    policy: Policy
    if kind == "random":
        policy = StickyRandom(spec.num_actions, rng)
    elif kind == "scripted":
        if spec.family == "carracing":
            policy = CarDriver(spec, rng)
        elif spec.name == "breakout":
            policy = BreakoutPlayer(spec, rng)
        elif spec.name == "pong":
            policy = PongPlayer(spec, rng)
        else:
            policy = GenericAtariPlayer(spec, rng)
    else:
        raise UserError(f"unknown policy {kind!r}; choose one of {', '.join(POLICY_KINDS)}")
    policy.reset()
    return policy

"""The real games as `Simulator`s: ALE Atari (frame-by-frame, gapless audio) and CarRacing-v3.

Build them through `engine.games.make_simulator`; the classes here take an already resolved
`GameSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.games import ALE_SAMPLES_PER_FRAME, carracing_actions, games_config
from engine.simulator import GameSpec, Step, WorldEvent

ALE_MAX_FRAMES = 108_000
"""Episode cap in emulator frames (30 min of game time), as ALE v5 envs use."""


def _derive_seed(seed: int) -> int:
    """A non-negative int32 for ALE's `random_seed` from any int seed (stable across runs)."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0] & 0x7FFFFFFF)


class AtariSimulator:
    """An ALE game stepped one emulator frame at a time.

    ALE's `getAudio()` holds only the last emulated frame's 512 samples, so a frameskip-4 act()
    would drop 3/4 of the sound. We act() once per frame and keep every frame's samples:
    `Step.audio` is (frameskip * 512,) uint8 at `spec.audio_rate` (30720 Hz).

    Scripted players and RAM world events use `ram()`, `set_ram()` and the raw `ale` handle.
    """

    def __init__(
        self,
        spec: GameSpec,
        rom_id: str,
        *,
        sticky: float = 0.0,
        audio: bool = True,
        full_action_space: bool = False,
        seed: int | None = None,
    ) -> None:
        import ale_py
        from ale_py import roms

        self.spec = spec
        self.rom_id = rom_id
        self.frameskip = spec.frameskip
        self.audio = audio
        self._rom_path = str(roms.get_rom_path(rom_id))
        self._seed = seed
        self._started = False

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # global; before the banner
        self.ale = ale_py.ALEInterface()
        """The raw ALE handle (ale_py.ALEInterface) for RAM events and inspection."""
        self.ale.setFloat("repeat_action_probability", float(sticky))
        self.ale.setInt("max_num_frames_per_episode", ALE_MAX_FRAMES)
        self.ale.setBool("sound_obs", bool(audio))
        self._load(seed)
        acts = self.ale.getLegalActionSet() if full_action_space else self.ale.getMinimalActionSet()
        self._actions = list(acts)
        if tuple(a.name for a in self._actions) != spec.action_meanings:
            raise ValueError(f"spec actions {spec.action_meanings} do not match the ROM's")
        self._audio_buf = np.zeros(ALE_SAMPLES_PER_FRAME, dtype=np.uint8)

    def _load(self, seed: int | None) -> None:
        # ALE applies `random_seed` when a ROM is loaded, so seeding means reloading (~60 ms).
        if seed is not None:
            self.ale.setInt("random_seed", _derive_seed(seed))
        self.ale.loadROM(self._rom_path)

    # --- Simulator protocol -------------------------------------------------------------
    def reset(self, seed: int | None = None) -> np.ndarray:
        """New episode; the same seed gives the same episode for the same actions."""
        if seed is None and not self._started:
            seed = self._seed
        if seed is not None and self._started:
            self._load(seed)
        elif seed is not None and not self._started and seed != self._seed:
            self._load(seed)
        self._started = True
        self.ale.reset_game()
        return self.ale.getScreenRGB()

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        """Repeat `action` for `frameskip` emulator frames; rewards are summed.

        Real games ignore `events`: world events on the real game are applied from outside
        (RAM writes, physics) by the events module.
        """
        if not 0 <= action < len(self._actions):
            raise ValueError(f"action {action} out of range for {self.spec.name} ({len(self._actions)})")
        ale, a = self.ale, self._actions[action]
        reward = 0.0
        audio: np.ndarray | None = None
        if self.audio:
            n = ALE_SAMPLES_PER_FRAME
            audio = np.empty(self.frameskip * n, dtype=np.uint8)
            for i in range(self.frameskip):
                if ale.game_over():
                    # Episode ended inside the skip: hold the last level (no click), keep length.
                    audio[i * n :] = audio[i * n - 1] if i else 0
                    break
                reward += ale.act(a)
                ale.getAudio(self._audio_buf)
                audio[i * n : (i + 1) * n] = self._audio_buf
        else:
            for _ in range(self.frameskip):
                reward += ale.act(a)
                if ale.game_over():
                    break
        return Step(
            frame=ale.getScreenRGB(),
            reward=float(reward),
            terminated=bool(ale.game_over(with_truncation=False)),
            truncated=bool(ale.game_truncated()),
            audio=audio,
            info={"lives": int(ale.lives()), "frame_number": int(ale.getEpisodeFrameNumber())},
        )

    def close(self) -> None:
        """Nothing to release explicitly; the ALE handle dies with the object."""

    # --- state access for scripted players and RAM events --------------------------------
    def ram(self) -> np.ndarray:
        """(128,) uint8 copy of the console RAM."""
        return self.ale.getRAM().copy()

    def set_ram(self, index: int, value: int) -> None:
        """Write one RAM byte (index 0..127, value 0..255)."""
        if not 0 <= index < 128:
            raise ValueError(f"RAM index {index} out of range 0..127")
        self.ale.setRAM(int(index), int(value) & 0xFF)

    @property
    def lives(self) -> int:
        return int(self.ale.lives())


@dataclass(frozen=True)
class CarState:
    """What a driver can read from CarRacing: world units, radians, track waypoints."""

    position: np.ndarray
    """(2,) hull position x, y."""
    angle: float
    """Hull angle (radians); the car points along (-sin(angle), cos(angle))."""
    velocity: np.ndarray
    """(2,) hull linear velocity."""
    speed: float
    """|velocity| in world units per second."""
    waypoints: np.ndarray
    """(N, 2) track centre line, in driving order (closed loop)."""
    nearest: int
    """Index of the waypoint closest to the car."""
    next_waypoint: int
    """Index of the first waypoint ahead of the car along the track."""
    tiles_visited: int


class CarRacingSimulator:
    """Gymnasium CarRacing-v3 (continuous) driven through the discrete set in assets/games.yaml.

    Each agent step applies one control for `spec.frameskip` (action repeat) 50 Hz physics
    ticks; frames are the 96x96x3 state pixels (no window). Episodes truncate after 1000 ticks,
    as CarRacing-v3 does. `set_physics` scales tire friction and engine power of this car.
    """

    def __init__(self, spec: GameSpec, *, seed: int | None = None) -> None:
        from gymnasium.envs.box2d.car_racing import CarRacing

        self.spec = spec
        self.action_repeat = spec.frameskip
        self.controls = np.array([a["control"] for a in carracing_actions()], dtype=np.float32)
        self.max_ticks = int(games_config()["carracing"]["max_physics_steps"])
        self.env = CarRacing(render_mode="state_pixels", continuous=True)
        self._seed = seed
        self._started = False
        self._ticks = 0
        self.friction_scale = 1.0
        self.engine_power_scale = 1.0

    def reset(self, seed: int | None = None) -> np.ndarray:
        """New random track (same seed -> same track and same episode for the same actions)."""
        if seed is None and not self._started:
            seed = self._seed
        self._started = True
        self._ticks = 0
        with self._physics():
            frame, _ = self.env.reset(seed=seed)
        return np.asarray(frame, dtype=np.uint8)

    def step(self, action: int, events: Sequence[WorldEvent] = ()) -> Step:
        """Apply discrete action `action` for `action_repeat` physics ticks; rewards summed."""
        if not 0 <= action < len(self.controls):
            raise ValueError(f"action {action} out of range for carracing ({len(self.controls)})")
        control = self.controls[action]
        reward, terminated, truncated = 0.0, False, False
        info: dict[str, Any] = {}
        frame = None
        with self._physics():
            for tick in range(self.action_repeat):
                last = tick == self.action_repeat - 1 or self._ticks + 1 >= self.max_ticks
                with self._no_render(skip=not last):
                    frame, r, terminated, _, tick_info = self.env.step(control)
                self._ticks += 1
                reward += float(r)
                info.update(tick_info)
                truncated = self._ticks >= self.max_ticks
                if terminated or truncated:
                    if frame is None:  # ended on a tick we did not draw
                        frame = self.env._render("state_pixels")
                    break
        info["tiles"] = int(self.env.tile_visited_count)
        return Step(
            frame=np.asarray(frame, dtype=np.uint8),
            reward=reward,
            terminated=bool(terminated),
            truncated=bool(truncated and not terminated),
            audio=None,
            info=info,
        )

    def close(self) -> None:
        self.env.close()

    # --- physics knobs for world events ("ice", "turbo") ---------------------------------
    def set_physics(self, friction_scale: float = 1.0, engine_power_scale: float = 1.0) -> None:
        """Scale tire friction (road and grass) and engine power of this car from now on.

        gymnasium's car model reads the module constants FRICTION_LIMIT and ENGINE_POWER on
        every tick; we swap in scaled values only while this simulator's physics runs, so
        other simulators in the same process are unaffected.
        """
        if friction_scale <= 0 or engine_power_scale <= 0:
            raise ValueError("physics scales must be > 0")
        self.friction_scale = float(friction_scale)
        self.engine_power_scale = float(engine_power_scale)

    @contextmanager
    def _no_render(self, skip: bool) -> Iterator[None]:
        """Skip drawing the state pixels on ticks whose frame nobody sees (half the step time).

        CarRacing.step draws after every physics tick; drawing has no effect on the physics.
        """
        if not skip:
            yield
            return
        self.env._render = lambda mode: None  # type: ignore[method-assign]
        try:
            yield
        finally:
            del self.env._render  # back to the class method

    @contextmanager
    def _physics(self) -> Iterator[None]:
        from gymnasium.envs.box2d import car_dynamics as cd

        friction, power = cd.FRICTION_LIMIT, cd.ENGINE_POWER
        cd.FRICTION_LIMIT = friction * self.friction_scale
        cd.ENGINE_POWER = power * self.engine_power_scale
        try:
            yield
        finally:
            cd.FRICTION_LIMIT, cd.ENGINE_POWER = friction, power

    # --- state for the scripted driver ----------------------------------------------------
    def car_state(self) -> CarState:
        """Position, heading, speed and where the track goes next."""
        env = self.env
        if env.car is None:
            raise RuntimeError("car_state() before reset()")
        hull = env.car.hull
        pos = np.array([hull.position[0], hull.position[1]], dtype=np.float64)
        vel = np.array([hull.linearVelocity[0], hull.linearVelocity[1]], dtype=np.float64)
        pts = self.waypoints()
        d = np.linalg.norm(pts - pos, axis=1)
        nearest = int(np.argmin(d))
        # The next waypoint is ahead if it lies in front of the car's heading.
        heading = np.array([-math.sin(hull.angle), math.cos(hull.angle)])
        nxt = nearest
        for k in range(3):
            cand = (nearest + k) % len(pts)
            if float(np.dot(pts[cand] - pos, heading)) > 0:
                nxt = cand
                break
        return CarState(
            position=pos,
            angle=float(hull.angle),
            velocity=vel,
            speed=float(np.linalg.norm(vel)),
            waypoints=pts,
            nearest=nearest,
            next_waypoint=nxt,
            tiles_visited=int(env.tile_visited_count),
        )

    def waypoints(self) -> np.ndarray:
        """(N, 2) track centre line of the current episode (track entries are alpha, beta, x, y)."""
        if getattr(self, "_track_id", None) != id(self.env.track):
            self._track_id = id(self.env.track)
            self._pts = np.array([[t[2], t[3]] for t in self.env.track], dtype=np.float64)
        return self._pts

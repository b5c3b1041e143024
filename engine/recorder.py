"""Writing recordings: the on-disk names, atomic file writes and the crash-safe `Recorder`.

Layout (documented for outside readers in docs/DATASET.md):

    ROOT/episode-000000/meta.json                    game, actions, seed, timestamps, format version
    ROOT/episode-000000/start.npz                    observation: (H, W, 3) uint8, the reset frame
    ROOT/episode-000000/steps-00000000-00000015.npz  steps [0, 15): the *next* observations,
                                                     actions, rewards, terminations, truncations,
                                                     audio, events

Every file is written to a hidden temp name and renamed into place, so a file either exists
whole or not at all; a kill -9 loses only the chunk being filled (about one second of play).
Episode directories are claimed with mkdir, which is atomic, so several processes can append to
the same root without colliding. The reader is engine/dataset.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.files import npz_bytes, write_atomic
from engine.simulator import GameSpec, Step, WorldEvent

FORMAT = "neural-arcade-episode"
FORMAT_VERSION = 1
META_FILE = "meta.json"
START_FILE = "start.npz"
EPISODE_RE = re.compile(r"^episode-(\d{6,})$")
CHUNK_RE = re.compile(r"^steps-(\d{8,})-(\d{8,})\.npz$")
STEP_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "audio", "events")


class DatasetWarning(UserWarning):
    """A recording was damaged or unfinished; the readable part is still returned."""


def episode_dirname(episode_id: int) -> str:
    return f"episode-{episode_id:06d}"


def chunk_filename(start: int, end: int) -> str:
    return f"steps-{start:08d}-{end:08d}.npz"


def episode_ids(root: Path) -> list[int]:
    """Ids of the episode directories under `root`, ascending."""
    if not root.is_dir():
        return []
    ids = [int(m.group(1)) for p in root.iterdir() if (m := EPISODE_RE.match(p.name)) and p.is_dir()]
    return sorted(ids)


def reserve_episode_ids(root: str | Path, count: int) -> list[int]:
    """Claim `count` new episode ids under `root` (mkdir is atomic: concurrent callers never share one).

    Collection reserves ids up front so that episode k of a run lands in the k-th id whatever
    the number of worker processes. A reserved directory stays empty until its recorder starts.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = episode_ids(root)
    next_id = existing[-1] + 1 if existing else 0
    claimed: list[int] = []
    while len(claimed) < count:
        try:
            os.mkdir(root / episode_dirname(next_id))
            claimed.append(next_id)
        except FileExistsError:
            pass
        next_id += 1
    return claimed


TEMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")


def sweep_temp_files(root: str | Path) -> int:
    """Delete temp files left in `root`'s episodes by writers that died (their PID is gone).

    A crash can only ever leave these half-written files (the real names appear whole by
    rename); readers ignore them, this removes them. Returns how many were deleted.
    """
    removed = 0
    root = Path(root)
    for eid in episode_ids(root):
        for p in (root / episode_dirname(eid)).iterdir():
            m = TEMP_RE.match(p.name)
            if m and not _pid_alive(int(m.group(1))):
                try:
                    p.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError), or cannot tell: keep its file
        return True
    return True


def encode_events(events: Sequence[WorldEvent]) -> str:
    """One step's active events as a JSON list of [name, prompt] pairs; "" when none."""
    if not events:
        return ""
    return json.dumps([[e.name, e.prompt] for e in events], ensure_ascii=False)


def decode_events(text: str) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple((str(name), str(prompt)) for name, prompt in json.loads(text))


def _now() -> tuple[str, float]:
    unix = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(unix)), unix


def read_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not _meta_fields_ok(meta):
        return None  # a hand-edited or foreign file reads as "no readable meta.json": skipped
    return meta


def _meta_fields_ok(meta: dict[str, Any]) -> bool:
    """The fields the reader relies on are there with usable types."""
    def whole(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    shape = meta.get("observation_shape")
    names = meta.get("action_meanings")
    return (all(isinstance(meta.get(k), str) for k in ("game", "env_id", "family"))
            and whole(meta.get("format_version")) and whole(meta.get("frameskip"))
            and whole(meta.get("audio_rate"))
            and isinstance(meta.get("steps_per_second"), (int, float))
            and isinstance(names, list) and all(isinstance(n, str) for n in names)
            and isinstance(shape, list) and len(shape) == 3 and all(whole(v) and v > 0 for v in shape))


def episode_kind(meta: dict[str, Any]) -> str:
    """What must agree between the episodes of one root: a world model learns one game at one
    step size and resolution ("breakout, frameskip 4, 210x160")."""
    shape = meta.get("observation_shape") or []
    return (f"{meta['game']}, {step_size(meta.get('family'), meta['frameskip'])}"
            + (f", {shape[0]}x{shape[1]}" if shape else ""))


def episode_source(meta: dict[str, Any]) -> str:
    """Who played an episode, from meta.json's `extra.source`: collect, import, neural (a world
    model, `play.py --checkpoint --record`), or play (the real game by hand: no source)."""
    extra = meta.get("extra")
    return str(extra.get("source", "play")) if isinstance(extra, dict) else "play"


def step_size(family: Any, n: int) -> str:
    """The step size as the game's own flag calls it: Atari's frameskip, CarRacing's action repeat."""
    return f"frameskip {n}" if family == "atari" else f"action repeat {n}"


def _check_root_game(root: Path, spec: GameSpec) -> dict[str, Any] | None:
    """Refuse to record a second game (or step size) into a root; returns an existing meta."""
    for eid in episode_ids(root):
        meta = read_meta(root / episode_dirname(eid))
        if meta is not None:
            if (meta["game"], meta["frameskip"]) != (spec.name, spec.frameskip):
                raise UserError(f"{root} already holds {episode_kind(meta)} episodes; record {spec.name}, "
                                f"{step_size(spec.family, spec.frameskip)} into another directory")
            return meta
    return None


# --------------------------------------------------------------------------- Recorder


class Recorder:
    """Append episodes to a dataset root, one ~1 s chunk at a time, crash-safe.

    Args:
        root: dataset directory; created if needed. Unwritable -> UserError right away.
        spec: the game being recorded (a root holds one game).
        chunk_steps: steps per chunk file; default ceil(spec.steps_per_second), one second of play.
        extra_meta: JSON-able dict stored under "extra" in every episode's meta.json.
        compresslevel: zlib level of the chunk files (1 = fastest).
        durable: fsync every chunk (survives a power cut, not just a crash). Bulk collection
            turns it off and syncs at episode end: fsync dominates its cost on a busy disk.
        sweep: delete temp files that crashed writers left in the root (lists every episode
            directory once; bulk collection sweeps once per run instead of per episode).
    """

    def __init__(self, root: str | Path, spec: GameSpec, *, chunk_steps: int | None = None,
                 extra_meta: dict[str, Any] | None = None, compresslevel: int = 1,
                 durable: bool = True, sweep: bool = True) -> None:
        self.root = Path(root)
        self.spec = spec
        self.chunk_steps = int(chunk_steps or math.ceil(spec.steps_per_second))
        if self.chunk_steps < 1:
            raise ValueError("chunk_steps must be >= 1")
        self.extra_meta = dict(extra_meta or {})
        self.compresslevel = compresslevel
        self.durable = durable
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except FileExistsError:  # mkdir(exist_ok=True) raises this only for a non-directory
            raise UserError(f"cannot record into {root}: it is a file, not a directory") from None
        except OSError as err:
            raise UserError(f"cannot record into {root}: {err.strerror or err}") from None
        existing = _check_root_game(self.root, spec)
        self._root_shape = list(existing["observation_shape"]) if existing else None
        if sweep:
            sweep_temp_files(self.root)
        self._dir: Path | None = None
        self._meta: dict[str, Any] = {}
        self._state: tuple[int, list[tuple[Any, ...]]] = (0, [])
        """(steps already flushed in the open episode, steps buffered since)."""
        self._audio_len: int | None = None
        self._frame_shape: tuple[int, ...] = ()
        self._closing = False
        # add() may run on a simulation thread while close() comes from the main thread's
        # finally; reentrant so a signal handler on the thread that holds it can still close.
        self._lock = threading.RLock()

    @property
    def recording(self) -> bool:
        return self._dir is not None

    @property
    def episode_dir(self) -> Path | None:
        return self._dir

    @property
    def root_frame_shape(self) -> list[int] | None:
        """(H, W, 3) of the frames already in the root (every episode must match), if any."""
        return self._root_shape

    @property
    def num_steps(self) -> int:
        """Steps added to the open episode so far (written or buffered)."""
        return self._state[0] + len(self._state[1])

    def begin_episode(self, first_frame: np.ndarray, seed: int | None, *,
                      episode_id: int | None = None) -> Path:
        """Start an episode from its reset frame; ends the open one first. Returns its directory.

        `episode_id` must come from `reserve_episode_ids`; None claims the next free id.
        """
        if self._dir is not None:
            self.end_episode()
        frame = np.asarray(first_frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._root_shape is not None and list(frame.shape) != self._root_shape:
            h, w = self._root_shape[:2]
            raise UserError(f"{self.root} holds {h}x{w} frames and this game shows {frame.shape[0]}x"
                            f"{frame.shape[1]} (a neural game?); record into another directory")
        self._root_shape = list(frame.shape)
        if episode_id is None:
            episode_id = reserve_episode_ids(self.root, 1)[0]
        path = self.root / episode_dirname(episode_id)
        if not path.is_dir() or any(path.iterdir()):
            raise ValueError(f"{path} is not a reserved, empty episode directory")
        started, started_unix = _now()
        spec = self.spec
        self._meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "episode_id": episode_id,
            "game": spec.name, "env_id": spec.env_id, "family": spec.family,
            "action_meanings": list(spec.action_meanings), "steps_per_second": spec.steps_per_second,
            "frameskip": spec.frameskip, "audio_rate": spec.audio_rate, "seed": seed,
            "observation_shape": list(frame.shape), "chunk_steps": self.chunk_steps,
            "start_time": started, "start_unix": started_unix, "end_time": None, "end_unix": None,
            "complete": False, "num_steps": None, "extra": dict(self.extra_meta),
        }
        # start.npz before meta.json: a directory with a meta file always has its first frame.
        write_atomic(path / START_FILE, npz_bytes({"observation": frame}, self.compresslevel))
        write_atomic(path / META_FILE, json.dumps(self._meta, indent=1).encode())
        self._dir = path
        self._state = (0, [])
        self._audio_len = None
        self._frame_shape = frame.shape
        return path

    def set_extra(self, key: str, value: Any) -> None:
        """Add a JSON-able entry to the open episode's meta["extra"] (written at its end)."""
        if self._dir is not None:
            self._meta["extra"][key] = value

    def add(self, action: int, step: Step, events: Sequence[WorldEvent] = ()) -> None:
        """Record one step: the action taken and what the simulator returned for it."""
        if self._dir is None:
            raise RuntimeError("add() before begin_episode()")
        if step.frame.shape != self._frame_shape or step.frame.dtype != np.uint8:
            raise ValueError(f"frame {step.frame.shape} {step.frame.dtype} differs from the "
                             f"episode's {self._frame_shape} uint8")
        # Copies: a simulator may hand out the same buffer every step (a model's output tensor,
        # an audio ring); ~10 us per Atari step.
        audio = None if step.audio is None else np.array(step.audio, dtype=np.uint8).reshape(-1)
        n_audio = -1 if audio is None else audio.shape[0]
        if self._audio_len is None:
            self._audio_len = n_audio
        elif n_audio != self._audio_len:
            raise ValueError(f"audio of {n_audio} samples in a step; earlier steps had {self._audio_len}")
        # One append per step and one assignment per flush: a KeyboardInterrupt (or a signal
        # handler calling close()) between any two bytecodes never leaves half a step buffered
        # or a chunk counted twice; at worst the chunk being written is missing (a gap the
        # reader reports), never wrong.
        item = (step.frame.copy(), int(action), float(step.reward), bool(step.terminated),
                bool(step.truncated), audio, encode_events(events))
        with self._lock:
            if self._dir is None:
                raise RuntimeError("add() after the episode was closed")
            _, buf = self._state
            buf.append(item)
            if len(buf) >= self.chunk_steps:
                self._flush()

    def _flush(self) -> None:
        start, buf = self._state
        if not buf or self._dir is None:
            return
        frames, actions, rewards, terms, truncs, audio, events = zip(*buf)
        arrays = {
            "observations": np.stack(frames),
            "actions": np.asarray(actions, dtype=np.int32),
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminations": np.asarray(terms, dtype=bool),
            "truncations": np.asarray(truncs, dtype=bool),
            "events": np.asarray(events, dtype=np.str_),
        }
        if self._audio_len is not None and self._audio_len >= 0:
            arrays["audio"] = np.stack(audio)
        self._state = (start + len(buf), [])
        try:
            write_atomic(self._dir / chunk_filename(start, start + len(buf)),
                         npz_bytes(arrays, self.compresslevel), durable=self.durable)
        except BaseException:  # Ctrl+C mid-write: put the steps back so close() writes them
            self._state = (start, buf + self._state[1])
            raise

    def end_episode(self) -> None:
        """Flush the last partial chunk and mark the episode complete in meta.json."""
        with self._lock:
            if self._dir is None:
                return
            try:
                self._flush()
                ended, ended_unix = _now()
                self._meta.update(end_time=ended, end_unix=ended_unix, complete=True,
                                  num_steps=self._state[0])
                write_atomic(self._dir / META_FILE, json.dumps(self._meta, indent=1).encode())
            except KeyboardInterrupt:
                # Ctrl+C as an episode ends: the episode stays open, so close() in the frame
                # loop's `finally` writes it again (both steps are idempotent) instead of
                # leaving it on disk as unfinished.
                raise
            except BaseException:
                self._dir, self._state = None, (0, [])  # a failed write: no further adds to it
                raise
            self._dir, self._state = None, (0, [])

    def close(self) -> None:
        """End any open episode. Safe to call twice, from `finally` or a signal handler."""
        if self._closing:
            return
        self._closing = True
        try:
            self.end_episode()
        finally:
            self._closing = False

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Reading recordings with numpy alone: `open_dataset(root) -> Dataset` of Minari-style episodes.

The format and the `Recorder` that writes it live in engine/recorder.py (names re-exported
here, so `from engine.dataset import Recorder, open_dataset` is all a caller needs); the layout
is documented in docs/DATASET.md. Damaged or unfinished recordings are read as far as they are
whole, with one `DatasetWarning` each.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from engine.recorder import (
    CHUNK_RE,
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    START_FILE,
    STEP_FIELDS,
    DatasetWarning,
    Recorder,
    chunk_filename,
    decode_events,
    encode_events,
    episode_dirname,
    episode_ids,
    episode_kind,
    npz_bytes,
    read_meta,
    reserve_episode_ids,
    sweep_temp_files,
    write_atomic,
)
from engine.simulator import GameSpec

__all__ = [
    "CHUNK_RE", "FORMAT", "FORMAT_VERSION", "META_FILE", "START_FILE", "STEP_FIELDS", "Dataset",
    "DatasetWarning", "Episode", "EpisodeInfo", "Recorder", "chunk_filename", "decode_events",
    "encode_events", "episode_dirname", "episode_ids", "episode_kind", "npz_bytes", "open_dataset",
    "read_meta", "reserve_episode_ids", "spec_from_meta", "sweep_temp_files", "write_atomic",
]


@dataclass
class EpisodeInfo:
    """What `open_dataset` learns from file names and meta.json, without reading any frames."""

    id: int
    path: Path
    num_steps: int
    """Steps readable as far as the chunk names tell (a corrupt chunk found later lowers it)."""
    complete: bool
    """False when the recording process died before end_episode()."""
    meta: dict[str, Any]
    chunks: list[tuple[int, int, Path]] = field(repr=False, default_factory=list)


@dataclass
class Episode:
    """One episode, Minari-style. N steps; observations[0] is the reset frame."""

    observations: np.ndarray  # (N+1, H, W, 3) uint8
    actions: np.ndarray  # (N,) int32
    rewards: np.ndarray  # (N,) float32
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    audio: np.ndarray | None  # (N, S) uint8 samples at meta["audio_rate"], or None
    events: list[tuple[tuple[str, str], ...]]  # per step: active (name, prompt) pairs
    meta: dict[str, Any]

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])


def spec_from_meta(meta: dict[str, Any]) -> GameSpec:
    return GameSpec(name=meta["game"], env_id=meta["env_id"], family=meta["family"],
                    action_meanings=tuple(meta["action_meanings"]),
                    steps_per_second=float(meta["steps_per_second"]), frameskip=int(meta["frameskip"]),
                    audio_rate=int(meta["audio_rate"]))


def _scan_chunks(path: Path) -> tuple[list[tuple[int, int, Path]], str | None]:
    """The contiguous run of chunk files from step 0, and a note about anything after a gap."""
    found = sorted((int(m.group(1)), int(m.group(2)), p) for p in path.iterdir()
                   if (m := CHUNK_RE.match(p.name)))
    chunks: list[tuple[int, int, Path]] = []
    for start, end, p in found:
        expected = chunks[-1][1] if chunks else 0
        if start != expected or end <= start:
            return chunks, f"{p.name} does not continue step {expected}"
        chunks.append((start, end, p))
    return chunks, None


class Dataset:
    """A dataset root opened for reading. `episodes` lists the usable ones in id order."""

    def __init__(self, root: Path, spec: GameSpec, episodes: list[EpisodeInfo]) -> None:
        self.root = root
        self.spec = spec
        self.episodes = episodes
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_steps(self) -> int:
        return sum(e.num_steps for e in self.episodes)

    def read(self, i: int, fields: Iterable[str]) -> dict[str, np.ndarray]:
        """Concatenate the chosen per-step arrays of episode i, decompressing only those.

        A chunk that cannot be read is skipped with one warning naming it, and the steps after
        it are dropped too (observations must stay contiguous); `episodes[i].num_steps` shrinks.
        """
        info = self.episodes[i]
        fields = tuple(fields)
        parts: dict[str, list[np.ndarray]] = {f: [] for f in fields}
        kept = 0
        for start, end, path in info.chunks:
            try:
                got = _read_chunk(path, fields)
                for f, arr in got.items():
                    if arr.shape[0] != end - start:
                        raise ValueError(f"{f} holds {arr.shape[0]} steps, expected {end - start}")
            except Exception as err:  # zip, zlib, npy header, missing member: all mean unreadable
                if path not in self._warned:
                    self._warned.add(path)
                    warnings.warn(f"skipping unreadable chunk {path} ({type(err).__name__}: {err}); "
                                  f"dropped steps {start}..{info.num_steps} of episode {info.id}",
                                  DatasetWarning, stacklevel=2)
                info.chunks = info.chunks[:kept]
                info.num_steps = start
                break
            for f, arr in got.items():
                parts[f].append(arr)
            kept += 1
        out: dict[str, np.ndarray] = {}
        for f in fields:
            if parts[f]:
                out[f] = np.concatenate(parts[f])
            elif f != "audio" or not info.chunks:
                out[f] = _empty(f, info.meta)
        return out

    def first_observation(self, i: int) -> np.ndarray:
        """The reset frame of episode i (start.npz), (H, W, 3) uint8."""
        with np.load(self.episodes[i].path / START_FILE, allow_pickle=False) as npz:
            return npz["observation"]

    def _with_first(self, i: int, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Prepend the reset frame to `cols["observations"]` -> (N+1, H, W, 3).

        If start.npz is damaged, the episode starts one step later instead (its first chunk
        frame becomes observation 0), with one warning: still contiguous, one step shorter.
        """
        info = self.episodes[i]
        try:
            first = self.first_observation(i)
        except Exception as err:
            path = info.path / START_FILE
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"unreadable start frame {path} ({type(err).__name__}: {err}); "
                              f"episode {info.id} is read from its step 1", DatasetWarning, stacklevel=3)
            return {k: v[1:] if k != "observations" else v for k, v in cols.items()}
        cols["observations"] = np.concatenate([first[None], cols["observations"]])
        return cols

    def load_frames(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Fast path for training: (observations (N+1,H,W,3) uint8, actions (N,) int32)."""
        cols = self._with_first(i, self.read(i, ("observations", "actions")))
        return cols["observations"], cols["actions"]

    def load(self, i: int) -> Episode:
        """Episode i with every field (see `Episode`)."""
        cols = self._with_first(i, self.read(i, STEP_FIELDS))
        return Episode(observations=cols["observations"], actions=cols["actions"],
                       rewards=cols["rewards"], terminations=cols["terminations"],
                       truncations=cols["truncations"], audio=cols.get("audio"),
                       events=[decode_events(str(t)) for t in cols["events"]],
                       meta=self.episodes[i].meta)

    def __iter__(self) -> Iterator[Episode]:
        return (self.load(i) for i in range(len(self)))


def _read_chunk(path: Path, fields: tuple[str, ...], tries: int = 3) -> dict[str, np.ndarray]:
    """The chosen arrays of one chunk file (audio only where recorded).

    numpy parses each .npy header with ast.literal_eval, and CPython 3.11 (seen on 3.11.7) can
    raise a spurious "AST constructor recursion depth mismatch" SystemError from it when several
    threads parse at once (cpython gh-106905), as models/data.py's loader threads do. That says
    nothing about the file, so the chunk is read again instead of being dropped as unreadable.
    """
    for _ in range(tries - 1):
        try:
            return _load_fields(path, fields)
        except SystemError as err:
            if "recursion depth mismatch" not in str(err):
                raise
    return _load_fields(path, fields)


def _load_fields(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {f: npz[f] for f in fields if f in npz.files or f != "audio"}


def _empty(name: str, meta: dict[str, Any]) -> np.ndarray:
    shapes: dict[str, tuple[tuple[int, ...], Any]] = {
        "observations": ((0, *meta["observation_shape"]), np.uint8), "actions": ((0,), np.int32),
        "rewards": ((0,), np.float32), "terminations": ((0,), bool), "truncations": ((0,), bool),
        "events": ((0,), np.str_), "audio": ((0, 0), np.uint8)}
    shape, dtype = shapes[name]
    return np.zeros(shape, dtype)


def open_dataset(root: str | Path) -> Dataset:
    """Open a dataset root. Warns once about unfinished/damaged episodes and keeps what is readable.

    Raises UserError when the root is missing, holds no episodes, or mixes games.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"no dataset at {root} (not a directory)")
    episodes: list[EpisodeInfo] = []
    notes: list[str] = []
    games: dict[str, int] = {}
    for eid in episode_ids(root):
        path = root / episode_dirname(eid)
        meta = read_meta(path)
        if meta is None:
            if any(path.iterdir()):
                notes.append(f"{path.name}: no readable {META_FILE}, skipped")
            continue  # an empty directory is a reserved id whose recording never started
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise UserError(f"{path} uses format version {meta['format_version']}; "
                            f"this reader knows up to {FORMAT_VERSION}")
        chunks, gap = _scan_chunks(path)
        num_steps = chunks[-1][1] if chunks else 0
        complete = bool(meta.get("complete"))
        if gap:
            notes.append(f"{path.name}: {gap}; kept {num_steps} steps")
        elif not complete:
            notes.append(f"{path.name}: unfinished (recording stopped), kept {num_steps} steps")
        elif meta.get("num_steps") is not None and num_steps != meta["num_steps"]:
            notes.append(f"{path.name}: {num_steps} of {meta['num_steps']} steps on disk")
        if num_steps == 0:
            continue
        games[episode_kind(meta)] = games.get(episode_kind(meta), 0) + 1
        episodes.append(EpisodeInfo(eid, path, num_steps, complete, meta, chunks))
    if len(games) > 1:
        listed = "; ".join(f"{g} ({n} episodes)" for g, n in sorted(games.items()))
        raise UserError(f"{root} mixes games: {listed}; keep one game (and frameskip, frame size) "
                        f"per directory")
    if notes:
        warnings.warn(f"{root}: " + "; ".join(notes), DatasetWarning, stacklevel=2)
    if not episodes:
        raise UserError(f"no readable episodes in {root}")
    return Dataset(root, spec_from_meta(episodes[0].meta), episodes)

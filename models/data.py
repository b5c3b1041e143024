"""Recordings at model resolution: the frames of every episode resized once and cached.

1. Frames are resized once to the model resolution (area interpolation, i.e. the mean of the
   source pixels each target pixel covers) and cached next to the data as
   DATA/.cache/<res>/episode-XXXXXX.npy, (N+1, 3, R, R) uint8, channels first. A small json
   beside each cache records what it was built from (step count, chunk files, their sizes and
   mtimes); a changed recording rebuilds it. Caches are memory-mapped, so a batch is numpy
   indexing into the page cache.
2. Held-out split by episode: a fixed rule on the episode index (every (1/f)-th one), so the
   split does not depend on the seed and stays put when episodes are appended.

Training windows are cut from these by `models.windows.WindowSampler`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.dataset import Dataset, EpisodeInfo
from engine.errors import UserError
from engine.simulator import GameSpec


@dataclass
class EpisodeArrays:
    """One episode at model resolution. N steps."""

    index: int
    """Position in the dataset's episode list."""
    frames: np.ndarray
    """(N+1, 3, R, R) uint8, memory-mapped."""
    actions: np.ndarray
    """(N,) int64."""
    rewards: np.ndarray
    """(N,) float32."""
    terminations: np.ndarray
    """(N,) float32 0/1."""
    events: np.ndarray
    """(N, E) bool: event e of `Recordings.event_names` active during step t."""

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])


def split_episodes(num_episodes: int, holdout_fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) episode indices for a held-out `fraction` of the episodes.

    With two or more episodes and a positive fraction at least one is held out and at least one
    trains; with a single episode everything trains.
    """
    if num_episodes < 2 or holdout_fraction <= 0:
        return list(range(num_episodes)), []
    # Episode i is held out when floor((i+1)f) > floor(i f): every (1/f)-th episode, exactly the
    # asked fraction over any prefix, and unchanged when episodes are appended.
    held = [i for i in range(num_episodes)
            if math.floor((i + 1) * holdout_fraction) > math.floor(i * holdout_fraction)]
    if not held:
        held = [num_episodes - 1]
    if len(held) == num_episodes:
        held = held[1:]
    train = [i for i in range(num_episodes) if i not in set(held)]
    return train, held


def _cache_root(data_root: Path, resolution: int) -> Path:
    """DATA/.cache/<res>; a per-user temp dir keyed on the data path when DATA is read-only."""
    root = data_root / ".cache" / str(resolution)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return root
    except OSError:
        key = abs(hash(str(data_root.resolve()))) % 10**12
        root = Path(tempfile.gettempdir()) / f"neural-arcade-cache-{key}" / str(resolution)
        root.mkdir(parents=True, exist_ok=True)
        return root


def _signature(info: EpisodeInfo) -> dict[str, object]:
    """What a cache was built from: step count and every chunk's name, size and mtime."""
    chunks = []
    for _start, _end, path in info.chunks:
        st = Path(path).stat()
        chunks.append([Path(path).name, int(st.st_size), int(st.st_mtime_ns)])
    return {"num_steps": int(info.num_steps), "chunks": chunks, "version": 2}


def resize_frames(frames: np.ndarray, resolution: int, chunk: int = 256) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, R, R) uint8 by area interpolation (mean over covered pixels)."""
    out = np.empty((frames.shape[0], 3, resolution, resolution), np.uint8)
    for s in range(0, frames.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[s:s + chunk])).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (resolution, resolution):
            x = F.interpolate(x, size=(resolution, resolution), mode="area")
        out[s:s + chunk] = x.round_().clamp_(0, 255).to(torch.uint8).numpy()
    return out


class Recordings:
    """The episodes of a dataset at model resolution, frames memory-mapped from the cache.

    Args:
        dataset: an opened recording directory.
        resolution: square model resolution R.
        event_names: event vocabulary (columns of `EpisodeArrays.events`); events recorded under
            other names are ignored with one warning.
        progress: show a progress bar while caches are built.
    """

    def __init__(self, dataset: Dataset, resolution: int, event_names: list[str],
                 progress: bool = True) -> None:
        self.dataset = dataset
        self.root = Path(dataset.root)
        self.spec: GameSpec = dataset.spec
        self.resolution = resolution
        self.event_names = list(event_names)
        self.recorded_events: set[str] = set()
        cache = _cache_root(self.root, resolution)
        infos = list(dataset.episodes)
        # Episodes load on a few threads: inflating chunks, resizing and writing release the GIL,
        # and building the cache is otherwise ~1,500 frames/s per core (a minute and a half for
        # 130k steps on one core of a 16-core GPU machine).
        workers = max(1, min(8, os.cpu_count() or 1, len(infos)))
        with ThreadPoolExecutor(workers, thread_name_prefix="frames") as pool:
            loading = pool.map(lambda i: self._load(i, infos[i], cache), range(len(infos)))
            if progress:
                from tqdm import tqdm
                loading = tqdm(loading, total=len(infos), desc=f"frames at {resolution}x{resolution}",
                               unit="ep", leave=False)
            self.episodes = list(loading)
        unknown = self.recorded_events - set(self.event_names)
        if unknown:
            warnings.warn(f"events {sorted(unknown)} in the recordings have no paraphrase embeddings; "
                          "the model is trained without them", stacklevel=2)

    def _load(self, i: int, info: EpisodeInfo, cache: Path) -> EpisodeArrays:
        ds = self.dataset
        cols = ds.read(i, ("actions", "rewards", "terminations", "events"))
        n = int(cols["actions"].shape[0])
        name = info.path.name
        path, sig_path = cache / f"{name}.npy", cache / f"{name}.json"
        source = _signature(info)
        source["num_steps"] = n
        # The frames may cover fewer steps than the other columns: a chunk whose frames are
        # damaged (its other fields read fine) ends them early, and a damaged start frame makes
        # the episode begin at step 1. The cache records the step range [first, end) they cover.
        built: dict[str, Any] | None = None
        if path.is_file() and sig_path.is_file():
            try:
                stored = json.loads(sig_path.read_text())
                if isinstance(stored, dict) and stored.get("source") == source:
                    built = stored
            except ValueError:
                built = None
        frames = self._open_cache(path, built) if built is not None else None
        if frames is None:  # no cache, an outdated one, or a damaged one (truncated, edited): build it
            try:  # load_frames starts the episode at step 1 (with a warning) when this fails
                ds.first_observation(i)
                first = 0
            except Exception:  # noqa: BLE001 - any damage to start.npz
                first = 1
            obs, acts = ds.load_frames(i)
            end = min(n, first + int(acts.shape[0]))
            small = resize_frames(obs[: end - first + 1], self.resolution)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, small, allow_pickle=False)
            os.replace(tmp, path)
            built = {"source": source, "first": first, "end": end}
            sig_tmp = sig_path.with_name(f".{sig_path.name}.{os.getpid()}.tmp")
            sig_tmp.write_text(json.dumps(built))
            os.replace(sig_tmp, sig_path)
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
        assert built is not None
        first, end = int(built["first"]), int(built["end"])
        if (first, end) != (0, n):
            cols = {k: v[first:end] for k, v in cols.items()}
            n = max(0, end - first)
        col = {e: k for k, e in enumerate(self.event_names)}
        events = np.zeros((n, len(self.event_names)), bool)
        for t, text in enumerate(cols["events"]):
            text = str(text)
            if not text:
                continue
            for pair in json.loads(text):
                self.recorded_events.add(str(pair[0]))
                if pair[0] in col:
                    events[t, col[pair[0]]] = True
        return EpisodeArrays(index=i, frames=frames, actions=cols["actions"].astype(np.int64),
                             rewards=cols["rewards"].astype(np.float32),
                             terminations=cols["terminations"].astype(np.float32), events=events)

    def _open_cache(self, path: Path, built: dict[str, Any]) -> np.ndarray | None:
        """The cached (end - first + 1, 3, R, R) uint8 frames memory-mapped, or None when the file
        does not hold them whole."""
        try:
            frames = np.load(path, mmap_mode="r", allow_pickle=False)
            want = (int(built["end"]) - int(built["first"]) + 1, 3, self.resolution, self.resolution)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return frames if frames.shape == want and frames.dtype == np.uint8 else None

    def trained_events(self, episodes: list[int]) -> list[str]:
        """Names of the events active at least once in the given episodes."""
        seen = np.zeros(len(self.event_names), bool)
        for i in episodes:
            if self.episodes[i].num_steps:
                seen |= self.episodes[i].events.any(axis=0)
        return [n for n, s in zip(self.event_names, seen) if s]

    def start_contexts(self, context: int, count: int, prefer: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Real start contexts for play: the first `context` frames of up to `count` episodes.

        Returns frames (K, C, 3, R, R) uint8 and actions (K, C-1) long.
        """
        order = list(prefer) + [i for i in range(len(self.episodes)) if i not in set(prefer)]
        frames, actions = [], []
        for i in order:
            ep = self.episodes[i]
            if ep.num_steps + 1 >= context:
                frames.append(torch.from_numpy(np.array(ep.frames[:context])))
                actions.append(torch.from_numpy(ep.actions[: context - 1].copy()))
            if len(frames) == count:
                break
        if not frames:
            raise UserError(f"no episode in {self.root} has the {context} frames a start context needs")
        return torch.stack(frames), torch.stack(actions).long()


def describe(recs: Recordings, train: list[int], held: list[int]) -> dict[str, object]:
    """Data summary stored in the run's config.yaml (and used by eval to find the held-out split)."""
    return {
        "path": str(recs.root.resolve()), "episodes": len(recs.episodes),
        "steps": int(sum(e.num_steps for e in recs.episodes)),
        "train_episodes": len(train), "heldout_episodes": [int(i) for i in held],
        "resolution": recs.resolution,
    }



"""Training windows cut from recordings, fast enough not to starve a GPU.

1. Frames are resized once to the model resolution (area interpolation, i.e. the mean of the
   source pixels each target pixel covers) and cached next to the data as
   DATA/.cache/<res>/episode-XXXXXX.npy, (N+1, 3, R, R) uint8, channels first. A small json
   beside each cache records what it was built from (step count, chunk files, their sizes and
   mtimes); a changed recording rebuilds it. Caches are memory-mapped, so a batch is numpy
   indexing into the page cache.
2. Windows lie fully inside one episode: T+1 frames, frames[s .. s+T], actions[s .. s+T-1]; no
   padding, so `Batch.valid` is all True. Every start position of every training episode is
   equally likely. (Episode starts are still learned as context; play starts from real start
   contexts stored in the checkpoint, so the model never has to invent a first frame.)
3. Held-out split by episode: a fixed rule on the episode index (every (1/f)-th one), so the split does not depend on the seed and stays put when episodes are appended.
4. Event vectors: per example and per active event one TRAINING paraphrase embedding is drawn
   (as if one user had typed it), and the vectors of the events active at step t are summed;
   zeros when none. With probability `event_dropout` a whole example's event vectors are
   zeroed (null-event dropout) so the model also learns the unconditioned world, except in
   windows where an event starts or ends (those would teach it to invent events).
5. Batch i is a pure function of (seed, rank, i): resuming at step i draws exactly the batches
   an uninterrupted run would have, and DDP ranks draw disjoint random streams.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.dataset import Dataset, EpisodeInfo
from engine.errors import UserError
from engine.simulator import GameSpec
from models.world import EVENT_DIM, Batch


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
        todo = range(len(infos))
        if progress:
            from tqdm import tqdm
            todo = tqdm(todo, desc=f"frames at {resolution}x{resolution}", unit="ep", leave=False)
        self.episodes = [self._load(i, infos[i], cache) for i in todo]
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
        if built is None:
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
        first, end = int(built["first"]), int(built["end"])
        if (first, end) != (0, n):
            cols = {k: v[first:end] for k, v in cols.items()}
            n = max(0, end - first)
        frames = np.load(path, mmap_mode="r", allow_pickle=False)
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


@dataclass
class RawBatch:
    """A batch as the loader builds it: uint8 frames, converted to floats on the device."""

    frames: torch.Tensor  # (B, T+1, 3, R, R) uint8
    actions: torch.Tensor  # (B, T) long
    rewards: torch.Tensor  # (B, T) float
    terminations: torch.Tensor  # (B, T) float
    events: torch.Tensor  # (B, T, EVENT_DIM) float

    def to_batch(self, device: torch.device | str) -> Batch:
        """Move to `device` and map frames to [-1, 1] there (4x less to copy than floats)."""
        frames = self.frames.to(device, non_blocking=True).float().div_(127.5).sub_(1.0)
        valid = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
        return Batch(frames=frames, actions=self.actions.to(device, non_blocking=True),
                     rewards=self.rewards.to(device, non_blocking=True),
                     terminations=self.terminations.to(device, non_blocking=True),
                     events=self.events.to(device, non_blocking=True), valid=valid)

    def pin_memory(self) -> RawBatch:
        return RawBatch(*(t.pin_memory() for t in (self.frames, self.actions, self.rewards,
                                                    self.terminations, self.events)))


class WindowSampler:
    """Random training windows of T+1 frames from some episodes of `Recordings`.

    Args:
        recs: the recordings.
        episodes: indices of the episodes to draw from (the training split).
        window: T, steps per window.
        batch_size: windows per batch (per rank under DDP).
        event_bank: event name -> (P, EVENT_DIM) unit training-paraphrase embeddings.
        event_dropout: probability that an example's event vectors are zeroed.
        seed, rank: the random stream; batch i depends only on (seed, rank, i).
        event_change_fraction: share of each batch drawn from the windows in which the set of
            active events changes (an onset or an end). Those are the only examples where the
            event vector says something the context frames do not already show, and random
            schedules make them few (9% of the 4-step windows of data/breakout).
        event_noise: each drawn paraphrase embedding v becomes normalize(v + s * n), n ~ N(0, I/D)
            (norm about 1) and s ~ U(0, event_noise) per example and event. Wordings a user types
            sit further from an event's training paraphrases than those do from each other
            (MiniLM cosine to the event's mean: 0.53-0.66 for held-out wordings, 0.69-0.79 for
            training ones); noise teaches the event projection to answer the shared direction
            of a cluster rather than each training paraphrase. cos(v', v) ~ 1 / sqrt(1 + s^2).
        event_focus: event name -> relative weight of its change windows within the
            `event_change_fraction` share (others 1; a window where several events change takes
            the largest). Aims the change windows at the events a model still gets wrong.
        reward_fraction: share of each batch drawn from the windows whose target step scores
            (nonzero reward), after the change windows. A brick breaks at the end of 2.3% of
            the 8-step windows of data/breakout; those steps alone show the ball meeting a
            brick, the brick vanishing and the score turning, which the reward head can only
            see if the model draws them.
    """

    def __init__(self, recs: Recordings, episodes: list[int], window: int, batch_size: int,
                 event_bank: dict[str, np.ndarray], event_dropout: float = 0.0,
                 seed: int = 0, rank: int = 0, event_change_fraction: float = 0.0,
                 event_noise: float = 0.0, event_focus: dict[str, float] | None = None,
                 reward_fraction: float = 0.0) -> None:
        self.recs, self.window, self.batch_size = recs, window, batch_size
        self.reward_fraction = reward_fraction
        self.event_noise = event_noise
        self.event_dropout, self.seed, self.rank = event_dropout, seed, rank
        self.event_change_fraction = event_change_fraction
        self.episodes = [i for i in episodes if recs.episodes[i].num_steps >= window]
        if not self.episodes:
            longest = max((recs.episodes[i].num_steps for i in episodes), default=0)
            raise UserError(
                f"dataset {recs.root} is too small for this model: a training window needs "
                f"{window + 1} consecutive frames ({window} steps) but the longest "
                f"{'training ' if len(episodes) < len(recs.episodes) else ''}episode has "
                f"{longest} steps; record longer episodes or shorten the model's context")
        counts = np.array([recs.episodes[i].num_steps - window + 1 for i in self.episodes])
        self.cum = np.cumsum(counts)
        unknown = sorted(set(event_focus or {}) - set(recs.event_names))
        if unknown:
            raise UserError(f"train.event_focus names {unknown[0]!r}, which is no known event; "
                            f"choose from {', '.join(recs.event_names)}")
        focus = np.array([float((event_focus or {}).get(n, 1.0)) for n in recs.event_names])
        windows: tuple[np.ndarray, np.ndarray] = (self._change_windows(focus) if event_change_fraction > 0
                                                  else (np.zeros(0, np.int64), np.zeros(0)))
        self.change_windows, weights = windows
        # None when every weight is 1: the plain uniform draw, so batches of runs without a
        # focus stay what they were (resume is bit-exact across versions).
        self.change_p = weights / weights.sum() if len(weights) and (weights != 1).any() else None
        self.reward_windows = self._reward_windows() if reward_fraction > 0 else np.zeros(0, np.int64)
        # Paraphrase banks stacked (E, Pmax, D) with per-event counts, for vectorised draws.
        names = recs.event_names
        self.num_paraphrases = np.array([len(event_bank[n]) for n in names], np.int64)
        pmax = int(self.num_paraphrases.max()) if len(names) else 1
        self.bank = np.zeros((len(names), pmax, EVENT_DIM), np.float32)
        for e, n in enumerate(names):
            self.bank[e, : len(event_bank[n])] = event_bank[n]

    @property
    def num_windows(self) -> int:
        return int(self.cum[-1])

    def _change_windows(self, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the windows whose T steps do not all have the same active events, and
        each one's weight: the largest `focus` (E,) among the events that change inside it."""
        found, weights, offset = [], [], 0
        for i, count in zip(self.episodes, np.diff(self.cum, prepend=0)):
            events = self.recs.episodes[i].events  # (N, E)
            if events.size:
                flips = events[1:] != events[:-1]  # (N-1, E)
                changed = np.flatnonzero(flips.any(1)) + 1  # step c differs from c-1
                best = np.zeros(int(count))
                for c in changed:
                    # Window s covers steps s .. s+T-1: it straddles the change at c when s < c <= s+T-1.
                    lo, hi = max(int(c) - self.window + 1, 0), min(int(c), int(count))
                    best[lo:hi] = np.maximum(best[lo:hi], focus[flips[c - 1]].max())
                starts = np.flatnonzero(best > 0)
                found.append(offset + starts)
                weights.append(best[starts])
            offset += int(count)
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(found), np.concatenate(weights)

    def _reward_windows(self) -> np.ndarray:
        """Flat indices of the windows whose last step (the transition to the target) scores."""
        found, offset = [], 0
        for i, count in zip(self.episodes, np.diff(self.cum, prepend=0)):
            scoring = np.flatnonzero(self.recs.episodes[i].rewards != 0)  # step r: reward of r -> r+1
            starts = scoring - self.window + 1  # window s ends with step s+T-1
            found.append(offset + starts[(starts >= 0) & (starts < count)])
            offset += int(count)
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def batch(self, index: int) -> RawBatch:
        """Batch number `index` of this sampler's stream (deterministic)."""
        rng = np.random.default_rng([self.seed, self.rank, index])
        B, T = self.batch_size, self.window
        flat = rng.integers(0, self.num_windows, size=B)
        if self.event_change_fraction > 0 and len(self.change_windows):
            pick = rng.random(B) < self.event_change_fraction
            k = int(pick.sum())
            drawn = (rng.integers(0, len(self.change_windows), size=k) if self.change_p is None
                     else rng.choice(len(self.change_windows), size=k, p=self.change_p))
            flat[pick] = self.change_windows[drawn]
        if self.reward_fraction > 0 and len(self.reward_windows):
            # Drawn after the change windows and only when asked, so other runs' batches stay as they were.
            pick = rng.random(B) < self.reward_fraction
            flat[pick] = self.reward_windows[rng.integers(0, len(self.reward_windows), size=int(pick.sum()))]
        which = np.searchsorted(self.cum, flat, side="right")
        starts = flat - np.concatenate([[0], self.cum[:-1]])[which]
        E = len(self.recs.event_names)
        frames = np.empty((B, T + 1, 3, self.recs.resolution, self.recs.resolution), np.uint8)
        actions = np.empty((B, T), np.int64)
        rewards = np.empty((B, T), np.float32)
        terms = np.empty((B, T), np.float32)
        active = np.zeros((B, T, E), np.float32)
        for b in range(B):
            ep = self.recs.episodes[self.episodes[which[b]]]
            s = int(starts[b])
            frames[b] = ep.frames[s: s + T + 1]
            actions[b] = ep.actions[s: s + T]
            rewards[b] = ep.rewards[s: s + T]
            terms[b] = ep.terminations[s: s + T]
            if E:
                active[b] = ep.events[s: s + T]
        events = np.zeros((B, T, EVENT_DIM), np.float32)
        if E and active.any():
            pick = (rng.random((B, E)) * self.num_paraphrases[None]).astype(np.int64)  # (B, E)
            chosen = self.bank[np.arange(E)[None], pick]  # (B, E, D)
            if self.event_noise > 0:
                scale = rng.uniform(0.0, self.event_noise, (B, E, 1))
                noisy = chosen + scale * rng.standard_normal(chosen.shape) / math.sqrt(EVENT_DIM)
                chosen = noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)
            keep = rng.random(B) >= self.event_dropout  # null-event dropout, whole example
            # ...but never where an event starts or ends inside the window: with the vector gone,
            # such an example teaches that rain or night may begin (or stop) unprompted, and the
            # model learns to invent events in long rollouts.
            keep |= (active != active[:, :1]).any(axis=(1, 2))
            events = np.einsum("bte,bed->btd", active * keep[:, None, None], chosen).astype(np.float32)
        return RawBatch(torch.from_numpy(frames), torch.from_numpy(actions), torch.from_numpy(rewards),
                        torch.from_numpy(terms), torch.from_numpy(events))

    def stream(self, start: int = 0, num_workers: int = 0, pin: bool = False) -> Iterator[RawBatch]:
        """Batches start, start+1, ... built ahead by `num_workers` threads (0: inline).

        numpy copies from memory-mapped files release the GIL, so threads overlap with the
        training step without the start-up cost of worker processes.
        """
        index = start
        if num_workers <= 0:
            while True:
                batch = self.batch(index)
                yield batch.pin_memory() if pin else batch
                index += 1

        def make(i: int) -> RawBatch:
            batch = self.batch(i)
            return batch.pin_memory() if pin else batch

        ahead = max(2, 2 * num_workers)
        with ThreadPoolExecutor(num_workers, thread_name_prefix="windows") as pool:
            pending: list[Future[RawBatch]] = [pool.submit(make, index + k) for k in range(ahead)]
            while True:
                batch = pending.pop(0).result()
                pending.append(pool.submit(make, index + ahead))
                index += 1
                yield batch


def heldout_batches(sampler: WindowSampler, count: int) -> list[RawBatch]:
    """A fixed set of batches for the held-out loss (same every evaluation)."""
    return [sampler.batch(10**9 + k) for k in range(count)]


def describe(recs: Recordings, train: list[int], held: list[int]) -> dict[str, object]:
    """Data summary stored in the run's config.yaml (and used by eval to find the held-out split)."""
    return {
        "path": str(recs.root.resolve()), "episodes": len(recs.episodes),
        "steps": int(sum(e.num_steps for e in recs.episodes)),
        "train_episodes": len(train), "heldout_episodes": [int(i) for i in held],
        "resolution": recs.resolution,
    }



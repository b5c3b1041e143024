"""Training windows cut from `models.data.Recordings`, fast enough not to starve a GPU.

1. Windows lie fully inside one episode: T+1 frames, frames[s .. s+T], actions[s .. s+T-1]; no
   padding, so `Batch.valid` is all True. Every start position of every training episode is
   equally likely. (Episode starts are still learned as context; play starts from real start
   contexts stored in the checkpoint, so the model never has to invent a first frame.)
2. Event vectors: per example and per active event one TRAINING paraphrase embedding is drawn
   (as if one user had typed it), and the vectors of the events active at step t are summed;
   zeros when none. With probability `event_dropout` a whole example's events are hidden
   (null-event dropout): its active steps get `HIDDEN_EVENT`, not zeros, so zeros always mean
   a clear world. Windows where an event starts or ends are spared (those would teach the model
   to invent events).
3. Batch i is a pure function of (seed, rank, i): resuming at step i draws exactly the batches
   an uninterrupted run would have, and DDP ranks draw disjoint random streams.
"""


from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from engine.errors import UserError
from models.config import ConfigError
from models.data import EpisodeArrays, Recordings
from models.object_windows import ObjectRegion, find_object_windows
from models.world import EVENT_DIM, HIDDEN_EVENT, Batch


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
        event_dropout: probability that an example's events are hidden behind `HIDDEN_EVENT`.
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
        object_fraction: share of each batch drawn from the windows in which `object_region`'s
            object is in play in every frame and no event is on (weather drawn over the region
            would pass its pixel test), after the reward windows. A one-step sampler draws the
            target from noise level 5 with no copy of it to lean on: it must carry Breakout's
            ball on from the context frames, which the usual recipe never teaches (the ball is
            in flight in 16% of the clear 4-step windows of data/breakout). Measured on the CPU,
            a ball-only stage (1.0, with model.edm.high_sigma_fraction 1.0) teaches it, a 0.6
            share mixed with the rest from the start does not, and a 0.4 share after the
            ball-only stage keeps most of it; docs/RESULTS.md, "A ball stage, then the mix".
        object_region: the `ObjectRegion` that says where the object is in play.
        object_crop, object_crop_fraction: with probability `object_crop_fraction` a batch is
            made of clear windows whose last context frame shows the object, every frame cut to
            `object_crop` x `object_crop` pixels around where it is there (at a random place in
            the crop, at least a quarter of its side from each edge). The target and the earlier
            frames may lie outside the region, so the crops hold the ball meeting the paddle
            and the wall, a miss, and a ball just back from a bounce; windows with the ball in
            the region in every frame teach flight alone (docs/RESULTS.md, "Crops that reach
            the paddle"). The ball is one pixel of 4,096 at 64x64; in a 16x16 crop it is one
            of 256, and a step costs about a sixteenth as much. Fully convolutional denoisers
            take any size that their folds and halvings divide. Measured on the CPU, a small U-Net from scratch carried the
            ball after 5,000 steps with 75% crop batches (7 minutes), where 1,250 steps on whole
            frames (8 minutes) had taught it nothing (docs/RESULTS.md, "What it takes to learn
            the ball").
        object_appear_fraction: share of each whole-frame batch drawn from clear windows where
            the object shows in the target frame and in none of the T frames before it, after
            the object windows: Breakout's serve. In data/breakout (45 episodes) 44 clear 8-frame
            windows are such, 40 of them with FIRE on the last step and the ball at the same
            spot. A model that never sees them carries a ball in play on but, once it is
            missed, never serves another. With a motion mask from the context alone (a pixel
            where nothing moved before weighs 1, the paddle 21) 4,483 CPU steps with them did
            not teach it; with the target's mask 1,500 did (docs/RESULTS.md, "Crops that
            reach the paddle").
        object_bounce_fraction: share of each batch, crop batches too, drawn from clear windows
            whose target shows the object off the straight line through its last two sightings
            in the context (models/object_windows.py), after the serve windows: the paddle's
            return and the rebounds off walls and bricks. A model whose crops held the ball
            flying into the paddle but hardly ever coming back let 57 of 64 held-out returns
            through (docs/RESULTS.md, "Bounces").
    """

    def __init__(self, recs: Recordings, episodes: list[int], window: int, batch_size: int,
                 event_bank: dict[str, np.ndarray], event_dropout: float = 0.0,
                 seed: int = 0, rank: int = 0, event_change_fraction: float = 0.0,
                 event_noise: float = 0.0, event_focus: dict[str, float] | None = None,
                 reward_fraction: float = 0.0, object_fraction: float = 0.0,
                 object_region: ObjectRegion | None = None, object_crop: int = 0,
                 object_crop_fraction: float = 0.0, object_appear_fraction: float = 0.0,
                 object_bounce_fraction: float = 0.0) -> None:
        self.recs, self.window, self.batch_size = recs, window, batch_size
        self.reward_fraction, self.object_fraction = reward_fraction, object_fraction
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
        # None when every weight is 1: the plain uniform draw, so adding the focus did not change
        # the batches of runs without one. (Runs with event_noise draw other batches since the
        # noise is drawn for the used pairs alone; a resume within one version is bit-exact.)
        self.change_p = weights / weights.sum() if len(weights) and (weights != 1).any() else None
        self.reward_windows = self._reward_windows() if reward_fraction > 0 else np.zeros(0, np.int64)
        self.object_windows = self.crop_windows = self.appear_windows = self.bounce_windows = np.zeros(0, np.int64)
        self.object_appear_fraction, self.object_bounce_fraction = object_appear_fraction, object_bounce_fraction
        self.object_region, self.object_crop_fraction = object_region, object_crop_fraction
        self.object_crop = object_crop if object_crop_fraction > 0 else 0
        if self.object_crop and not 0 < self.object_crop < recs.resolution:
            raise ConfigError(f"train.object_crop ({object_crop}) must be smaller than the frames "
                              f"({recs.resolution}x{recs.resolution})")
        if object_fraction > 0 or self.object_crop or object_appear_fraction > 0 or object_bounce_fraction > 0:
            if object_region is None:
                raise ConfigError("train.object_fraction, object_crop, object_appear_fraction and "
                                  "object_bounce_fraction need train.object_region: where the object shows")
            kinds = find_object_windows(self._spans(), object_region, window)
            self.object_windows, self.crop_windows = kinds.every, kinds.last
            self.appear_windows, self.bounce_windows = kinds.appear, kinds.bounce
            for key, fraction, found, where in (
                    ("object_crop", self.object_crop_fraction, self.crop_windows, "in its last context frame"),
                    ("object_fraction", object_fraction, self.object_windows, "in every frame"),
                    ("object_appear_fraction", object_appear_fraction, self.appear_windows,
                     "first in its target frame"),
                    ("object_bounce_fraction", object_bounce_fraction, self.bounce_windows,
                     "off its straight line in the target frame")):
                if not len(found) and fraction > 0:
                    raise UserError(f"train.{key}: no training window of {recs.root} shows the "
                                    f"object {where} with no event on; check train.object_region "
                                    f"({object_region}) against a recorded frame")
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

    def _spans(self) -> Iterator[tuple[EpisodeArrays, int, int]]:
        """Per training episode: it, the flat index of its first window, its number of windows."""
        for i, end, count in zip(self.episodes, self.cum, np.diff(self.cum, prepend=0)):
            yield self.recs.episodes[i], int(end - count), int(count)

    def _change_windows(self, focus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices of the windows whose T steps do not all have the same active events, and
        each one's weight: the largest `focus` (E,) among the events that change inside it."""
        found, weights = [], []
        for ep, offset, count in self._spans():
            events = ep.events  # (N, E)
            if events.size:
                flips = events[1:] != events[:-1]  # (N-1, E)
                changed = np.flatnonzero(flips.any(1)) + 1  # step c differs from c-1
                best = np.zeros(count)
                for c in changed:
                    # Window s covers steps s .. s+T-1: it straddles the change at c when s < c <= s+T-1.
                    lo, hi = max(int(c) - self.window + 1, 0), min(int(c), count)
                    best[lo:hi] = np.maximum(best[lo:hi], focus[flips[c - 1]].max())
                starts = np.flatnonzero(best > 0)
                found.append(offset + starts)
                weights.append(best[starts])
        if not found:
            return np.zeros(0, np.int64), np.zeros(0)
        return np.concatenate(found), np.concatenate(weights)

    def _reward_windows(self) -> np.ndarray:
        """Flat indices of the windows whose last step (the transition to the target) scores."""
        found = []
        for ep, offset, count in self._spans():
            scoring = np.flatnonzero(ep.rewards != 0)  # step r: reward of r -> r+1
            starts = scoring - self.window + 1  # window s ends with step s+T-1
            found.append(offset + starts[(starts >= 0) & (starts < count)])
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def batch(self, index: int) -> RawBatch:
        """Batch number `index` of this sampler's stream (deterministic)."""
        rng = np.random.default_rng([self.seed, self.rank, index])
        B, T = self.batch_size, self.window
        # Drawn only when crops are on, so other runs' batches stay as they were.
        crop = bool(self.object_crop) and rng.random() < self.object_crop_fraction
        flat = (self.crop_windows[rng.integers(0, len(self.crop_windows), size=B)] if crop
                else rng.integers(0, self.num_windows, size=B))
        if self.event_change_fraction > 0 and len(self.change_windows) and not crop:
            pick = rng.random(B) < self.event_change_fraction
            k = int(pick.sum())
            drawn = (rng.integers(0, len(self.change_windows), size=k) if self.change_p is None
                     else rng.choice(len(self.change_windows), size=k, p=self.change_p))
            flat[pick] = self.change_windows[drawn]
        if self.reward_fraction > 0 and len(self.reward_windows) and not crop:
            # Drawn after the change windows and only when asked, so other runs' batches stay as they were.
            pick = rng.random(B) < self.reward_fraction
            flat[pick] = self.reward_windows[rng.integers(0, len(self.reward_windows), size=int(pick.sum()))]
        if self.object_fraction > 0 and not crop:
            pick = rng.random(B) < self.object_fraction
            flat[pick] = self.object_windows[rng.integers(0, len(self.object_windows), size=int(pick.sum()))]
        if self.object_appear_fraction > 0 and not crop:
            pick = rng.random(B) < self.object_appear_fraction
            flat[pick] = self.appear_windows[rng.integers(0, len(self.appear_windows), size=int(pick.sum()))]
        if self.object_bounce_fraction > 0:
            # Crop batches too: a 16x16 crop holds the ball and the paddle it meets.
            pick = rng.random(B) < self.object_bounce_fraction
            flat[pick] = self.bounce_windows[rng.integers(0, len(self.bounce_windows), size=int(pick.sum()))]
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
                # Only the (example, event) pairs active in the window are ever used: noise for
                # those alone, in float32 (noise for all B x E pairs in float64 was two thirds of
                # a batch's time at B=256).
                used = active.any(axis=1)  # (B, E)
                scale = rng.uniform(0.0, self.event_noise, (int(used.sum()), 1)).astype(np.float32)
                noise = rng.standard_normal((len(scale), EVENT_DIM), dtype=np.float32)
                noisy = chosen[used] + scale * noise / np.float32(math.sqrt(EVENT_DIM))
                chosen[used] = noisy / np.linalg.norm(noisy, axis=-1, keepdims=True)
            keep = rng.random(B) >= self.event_dropout  # null-event dropout, whole example
            # ...but never where an event starts or ends inside the window: with the vector gone,
            # such an example teaches that rain or night may begin (or stop) unprompted, and the
            # model learns to invent events in long rollouts.
            keep |= (active != active[:, :1]).any(axis=(1, 2))
            events = (active * keep[:, None, None]) @ chosen  # (B, T, E) @ (B, E, D) -> (B, T, D)
            events[~keep[:, None] & active.any(axis=2)] = HIDDEN_EVENT  # (B, T) mask: steps hidden
        if crop:
            frames = self._crop(frames, rng)
        return RawBatch(torch.from_numpy(frames), torch.from_numpy(actions), torch.from_numpy(rewards),
                        torch.from_numpy(terms), torch.from_numpy(events))

    def _crop(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(B, T+1, 3, R, R) -> (B, T+1, 3, S, S): every frame of a window cut at one place, the
        object's last sighting in the context (frame T-1 in all but bounce windows, where the ball
        may hide in the paddle's rows) at least S/4 from the crop's edges."""
        assert self.object_region is not None
        B, S, R, T = len(frames), self.object_crop, frames.shape[-1], self.window
        context = frames[:, :T].reshape(B * T, *frames.shape[2:])  # (B*T, 3, R, R)
        shown, rows, cols = (x.reshape(B, T) for x in self.object_region.sight(context))
        last = T - 1 - np.argmax(shown[:, ::-1], axis=1)  # (B,) last frame that shows it (T-1 if none)
        rows, cols = rows[np.arange(B), last], cols[np.arange(B), last]
        top = np.clip(rows - rng.integers(S // 4, S - S // 4, size=B), 0, R - S)
        left = np.clip(cols - rng.integers(S // 4, S - S // 4, size=B), 0, R - S)
        return np.stack([frames[b, ..., top[b]: top[b] + S, left[b]: left[b] + S] for b in range(B)])

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

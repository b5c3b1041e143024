"""`train.py collect`: headless bulk recording of scripted or random play, in worker processes.

Episode k of a run is played with seed S+k (simulator, player and event schedule) and written
to the k-th episode id reserved up front, so the same seed gives the same dataset whatever
`--workers` is.
"""

from __future__ import annotations

import argparse
import json
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import UserError

EXAMPLES = """\
examples:
  python train.py collect --game breakout --policy scripted --episodes 50 --out data/breakout
  python train.py collect --game pong --policy random --episodes 200 --out data/pong --workers 2
  python train.py collect --game carracing --policy scripted --episodes 20 --out data/car --events random

Episode k uses seed S+k: rerunning with the same --seed gives the same data for any --workers.
Runs append: collecting again into one --out adds new episodes, continuing the seeds unless
--seed is given (one game per directory).
"""

PROGRESS_EVERY = 64
"""Steps between a worker's progress messages to the bar."""

STALL_TIMEOUT_S = 300.0
"""Default --stall-timeout: seconds without a progress message from any worker before collect
gives up. A worker reports every PROGRESS_EVERY steps, well under a second in every game here,
so minutes of silence mean a hung emulator or process, not a slow one."""


@dataclass(frozen=True)
class CollectJob:
    """Everything a worker needs to play and record one episode (picklable)."""

    game: str
    policy: str
    out: str
    max_steps: int
    frameskip: int = 4
    action_repeat: int = 2
    audio: bool = True
    events: str = "none"
    chunk_steps: int | None = None


@dataclass(frozen=True)
class EpisodeResult:
    index: int
    episode_id: int
    steps: int
    ret: float


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `collect` to train.py's parser."""
    p = sub.add_parser(
        "collect", help="record scripted or random play of a real game, headless, in parallel",
        description="Play a real game headless with a scripted or sticky-random player and record "
                    "every step (lossless frames, actions, rewards, audio, event track) into a "
                    "dataset directory (format: docs/DATASET.md).",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", required=True, help="short game name: breakout, pong, mspacman, carracing, ...")
    p.add_argument("--policy", choices=("scripted", "random"), default="scripted",
                   help="scripted: plays sensibly from RAM / car state, with some randomness; "
                        "random: sticky-random actions (default: scripted)")
    p.add_argument("--episodes", type=int, default=10, help="episodes to record (default: 10)")
    p.add_argument("--out", required=True, help="dataset directory (created; runs append to it)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.add_argument("--seed", type=int, default=None,
                   help="episode k uses seed SEED+k (default: 0 for a new directory, else one past "
                        "the highest seed already in it, so appending never repeats episodes)")
    p.add_argument("--max-steps", type=int, default=1000,
                   help="cut an episode after this many agent steps, marked truncated (default: 1000)")
    p.add_argument("--frameskip", type=int, default=4, help="Atari emulator frames per step (default: 4)")
    p.add_argument("--action-repeat", type=int, default=2,
                   help="CarRacing physics ticks per step (default: 2)")
    p.add_argument("--no-audio", action="store_true", help="do not record Atari audio (faster, smaller)")
    p.add_argument("--stall-timeout", type=float, default=STALL_TIMEOUT_S, metavar="SECONDS",
                   help="with --workers > 1: stop with an error when no worker has reported a step "
                        f"for this long (a hung process); 0 waits forever (default: {STALL_TIMEOUT_S:.0f})")
    p.add_argument("--events", choices=("none", "random"), default="none",
                   help="random: schedule random world-event onsets and ends (rain, night, ice, ...) "
                        "and record the event track (default: none)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("episodes", "workers", "max_steps", "frameskip", "action_repeat"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.stall_timeout >= 0:  # also refuses nan
        raise UserError(f"--stall-timeout must be >= 0 seconds, got {args.stall_timeout}")
    if args.seed is not None and not 0 <= args.seed < 2**32 - args.episodes:
        raise UserError(f"--seed must be in 0..2**32-1-EPISODES (episode k uses SEED+k), got {args.seed}")


def _event_tools() -> tuple[Any, Any, Any]:
    """engine.events' schedule functions and simulator layer, or UserError when not there."""
    try:
        from engine import events
    except ImportError as err:
        raise UserError(f"--events random is not available: engine.events cannot load ({err})") from None
    tools = tuple(getattr(events, n, None) for n in ("random_schedule", "events_at", "EventLayer"))
    if any(t is None for t in tools):
        raise UserError("--events random is not available: engine.events has no random_schedule")
    return tools  # type: ignore[return-value]


def play_episode(job: CollectJob, index: int, seed: int, episode_id: int,
                 progress: Any = None, stop: Any = None) -> EpisodeResult:
    """Play and record one episode with seed `seed` into the reserved `episode_id`.

    Args:
        progress: optional callable(steps) told about steps done, every PROGRESS_EVERY steps.
        stop: optional callable() -> bool; when it turns true the episode is closed early
            (what was played is kept, meta.json says "stopped": true).
    """
    import numpy as np

    from engine.autopilot import make_policy
    from engine.games import make_simulator
    from engine.recorder import Recorder

    sim: Any = make_simulator(job.game, frameskip=job.frameskip, action_repeat=job.action_repeat,
                              audio=job.audio, seed=seed)
    schedule: list[Any] = []
    events_at: Any = None
    if job.events == "random":
        random_schedule, events_at, layer = _event_tools()
        sim = layer(sim, seed=seed)
        schedule = random_schedule(np.random.default_rng(seed), sim.spec.name, job.max_steps)
    policy = make_policy(job.policy, sim.spec, seed)
    extra = {"source": "collect", "policy": job.policy, "events": job.events, "index": index}
    # Not durable: chunks are still renamed into place whole (a crash never tears one), but
    # fsync per chunk would cost more than the emulator on a busy disk; meta.json is synced.
    rec = Recorder(job.out, sim.spec, chunk_steps=job.chunk_steps, extra_meta=extra, durable=False,
                   sweep=False)
    steps, ret, reported = 0, 0.0, 0
    ended = False  # the game ended or --max-steps cut it (not Ctrl+C, not an error)
    try:
        frame = sim.reset(seed=seed)
        policy.reset()
        rec.begin_episode(frame, seed, episode_id=episode_id)
        for t in range(job.max_steps):
            active = events_at(schedule, t) if schedule else ()
            action = int(policy.act(frame, sim))
            step = sim.step(action, active)
            if t == job.max_steps - 1 and not step.terminated:
                step.truncated = True  # cut by --max-steps: a time limit, as Gymnasium marks it
            rec.add(action, step, active)
            frame = step.frame
            steps, ret = t + 1, ret + step.reward
            if progress is not None and steps - reported >= PROGRESS_EVERY:
                progress(steps - reported)
                reported = steps
            ended = step.terminated or step.truncated
            if ended or (stop is not None and steps % PROGRESS_EVERY == 0 and stop()):
                break
    finally:
        if not ended and rec.recording:
            rec.set_extra("stopped", True)  # closed by Ctrl+C or an error, not by the game
        rec.close()
        sim.close()
    if progress is not None and steps > reported:
        progress(steps - reported)
    return EpisodeResult(index, episode_id, steps, ret)


# --- worker processes ------------------------------------------------------------------

_progress_queue: Any = None
_stop_event: Any = None


def _init_worker(q: Any, stop: Any) -> None:
    """Workers leave Ctrl+C to the parent, which asks them to stop through `stop`: an episode
    being played is then closed cleanly instead of being killed mid-chunk."""
    import signal

    global _progress_queue, _stop_event
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _progress_queue, _stop_event = q, stop


def _worker(task: tuple[CollectJob, int, int, int]) -> EpisodeResult | None:
    job, index, seed, episode_id = task
    if _stop_event.is_set():
        return None
    return play_episode(job, index, seed, episode_id, progress=_progress_queue.put,
                        stop=_stop_event.is_set)


def next_seed(root: str | Path) -> int:
    """One past the highest episode seed already recorded in `root` (0 when none)."""
    from engine.recorder import META_FILE, episode_dirname, episode_ids

    seeds = [-1]
    for eid in episode_ids(Path(root)):
        try:
            meta = json.loads((Path(root) / episode_dirname(eid) / META_FILE).read_text())
            seeds.append(int(meta["seed"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return max(seeds) + 1


def _play_in_workers(tasks: list[tuple[CollectJob, int, int, int]], workers: int,
                     results: list[EpisodeResult], bar: Any, show: Any, out: Path,
                     stall_timeout: float = STALL_TIMEOUT_S) -> bool:
    """Play `tasks` in spawned worker processes, appending each finished episode to `results`.

    A process pool from concurrent.futures rather than multiprocessing.Pool: when a worker dies
    (killed, out of memory, a crash in an emulator) the pool breaks and says so, where
    multiprocessing.Pool quietly starts a new worker and waits forever for the lost episode.
    A worker that hangs without dying is caught by `stall_timeout` (seconds with no progress
    message from any worker; 0: never): the workers are killed and collect ends with an error.
    Returns whether Ctrl+C stopped the run; a second Ctrl+C raises KeyboardInterrupt.
    """
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # no inherited emulator/GL state; same on every OS
    q, stop = ctx.Queue(), ctx.Event()
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=ctx, initializer=_init_worker,
                               initargs=(q, stop))
    interrupted = stalled = False
    pending = {pool.submit(_worker, task) for task in tasks}
    last_news = time.monotonic()
    try:
        while pending:
            try:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        raise UserError(
                            f"a collect worker process died (killed, or out of memory?); the "
                            f"{len(results)} episodes finished before it are kept in {out}") from None
                    if result is not None:
                        results.append(result)
                        bar.update(1)
                if done:
                    last_news = time.monotonic()
                while True:
                    try:
                        show(q.get_nowait())
                    except queue.Empty:
                        break
                    last_news = time.monotonic()
                if stall_timeout and time.monotonic() - last_news > stall_timeout and not interrupted:
                    stalled = True
                    raise UserError(
                        f"no collect worker has played a step for {stall_timeout:g} s (a hung "
                        f"process?); the {len(results)} episodes finished before are kept in {out}, "
                        "the ones in play up to their last saved chunk (raise --stall-timeout if "
                        "episodes are slow to start)")
            except KeyboardInterrupt:
                if interrupted:
                    raise  # second Ctrl+C: give up waiting (chunks on disk stay readable)
                interrupted = True
                stop.set()  # episodes in play close at their next check; queued ones are skipped
                bar.write("stopping: closing the episodes being played (Ctrl+C again to abort)")
    finally:
        stop.set()
        if stalled:  # a hung worker never returns: kill it (SIGKILL also ends a stopped process)
            for child in ctx.active_children():
                child.kill()
        # no wait on a 2nd Ctrl+C or a stall
        pool.shutdown(wait=not ((interrupted or stalled) and pending), cancel_futures=True)
    return interrupted


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.games import find_game
    from engine.recorder import Recorder, episode_dirname, reserve_episode_ids

    _check(args)
    spec = find_game(args.game, frameskip=args.frameskip, action_repeat=args.action_repeat)
    if args.events == "random":
        _event_tools()
    Recorder(args.out, spec)  # unwritable dir or another game's data: fail before any work
    job = CollectJob(game=spec.name, policy=args.policy, out=str(args.out), max_steps=args.max_steps,
                     frameskip=args.frameskip, action_repeat=args.action_repeat,
                     audio=not args.no_audio, events=args.events)
    seed = next_seed(args.out) if args.seed is None else args.seed
    if seed + args.episodes > 2**32:  # seeds already in --out reach the end of the 32-bit range
        raise UserError(f"{args.out} already holds episodes up to seed {seed - 1}; episode seeds end "
                        f"at 2**32-1, so pass a lower --seed")
    ids = reserve_episode_ids(args.out, args.episodes)
    tasks = [(job, k, seed + k, eid) for k, eid in enumerate(ids)]
    results: list[EpisodeResult] = []
    interrupted = False
    total_steps = 0
    start = time.perf_counter()
    bar = tqdm(total=len(tasks), unit="ep", desc=f"collect {spec.name}", dynamic_ncols=True)

    def show(done_steps: int) -> None:
        nonlocal total_steps
        total_steps += done_steps
        rate = total_steps / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(steps=total_steps, steps_per_s=f"{rate:.0f}", refresh=False)

    try:
        if args.workers == 1 or len(tasks) == 1:
            for task in tasks:
                results.append(play_episode(*task, progress=show))
                bar.update(1)
        else:
            interrupted = _play_in_workers(tasks, args.workers, results, bar, show, Path(args.out),
                                           args.stall_timeout)
    except KeyboardInterrupt:
        interrupted = True
        if args.workers > 1:
            raise
    finally:
        bar.close()
        for eid in ids:  # ids whose episode never started (interrupt, error): give them back
            try:
                (Path(args.out) / episode_dirname(eid)).rmdir()
            except OSError:
                pass
    elapsed = time.perf_counter() - start
    steps = sum(r.steps for r in results)
    returns = [r.ret for r in results] or [0.0]
    print(f"{'interrupted: ' if interrupted else ''}recorded {len(results)} episodes "
          f"(seeds from {seed}), {steps} steps into {args.out} in {elapsed:.1f} s "
          f"({steps / max(elapsed, 1e-9):.0f} steps/s); return mean {sum(returns) / len(returns):.2f} "
          f"min {min(returns):.2f} max {max(returns):.2f}")
    return 130 if interrupted else 0

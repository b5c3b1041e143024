"""`train.py import` (bring your own npz episodes) and `train.py info` (what a dataset holds)."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from engine.errors import UserError, output_file

IMPORT_EXAMPLES = """\
each FILE.npz is one episode of T steps, arrays named:
  frames        (T+1, H, W, 3) uint8   frames[0] is the reset frame, frames[t+1] follows actions[t]
  actions       (T,) integer           indices into the game's action set (train.py info lists it)
  rewards       (T,) number
  terminations  (T,) bool or 0/1
  truncations   (T,) bool or 0/1
written e.g. by np.savez_compressed("ep0.npz", frames=..., actions=..., ...). No pickle.

example:
  python train.py import --game breakout --out data/mine ep0.npz ep1.npz
"""

EXPORT_EXAMPLES = """\
example:
  python train.py export --data data/breakout --out npz/breakout
  python train.py import --game breakout --out data/copy npz/breakout/*.npz   # and back
"""

INFO_EXAMPLES = """\
example:
  python train.py info --data data/breakout
  python train.py info --data data/breakout --json info.json
"""

STEP_ARRAYS = ("actions", "rewards", "terminations", "truncations")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `import` and `info` to train.py's parser."""
    p = sub.add_parser(
        "import", help="turn npz episode files into a dataset",
        description="Write npz episodes (frames/actions/rewards/terminations/truncations) as a "
                    "Neural Arcade dataset (docs/DATASET.md), appending to --out.",
        epilog=IMPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--game", required=True, help="the game the episodes come from (breakout, pong, ...)")
    p.add_argument("--out", required=True, help="dataset directory (created; imports append to it)")
    p.add_argument("--frameskip", type=int, default=4, help="Atari frames per step of the data (default 4)")
    p.add_argument("--action-repeat", type=int, default=2, help="CarRacing ticks per step (default 2)")
    p.add_argument("files", nargs="+", metavar="FILE.npz", help="one episode per file")
    p.set_defaults(func=run_import)

    e = sub.add_parser(
        "export", help="write a dataset's episodes as npz files (the import format)",
        description="Write each episode of a dataset as one npz file holding frames, actions, "
                    "rewards, terminations, truncations, and audio / events when recorded: the "
                    "files `train.py import` takes, readable anywhere with np.load.",
        epilog=EXPORT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--data", required=True, help="dataset directory")
    e.add_argument("--out", required=True,
                   help="directory for the npz files (created; files already there are never replaced)")
    e.add_argument("--episodes", type=int, nargs="*", metavar="I",
                   help="positions in the dataset's episode list (default: all)")
    e.set_defaults(func=run_export)

    q = sub.add_parser(
        "info", help="summarise a dataset: episodes, steps, returns, actions, size",
        description="Print what a dataset directory holds: episodes, steps, returns "
                    "(mean/min/max), the action histogram, world-event counts and size on disk.",
        epilog=INFO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--data", required=True, help="dataset directory")
    q.add_argument("--json", help="also write the summary as JSON here")
    q.set_defaults(func=run_info)


# --- import ------------------------------------------------------------------------------


def load_npz_episode(path: str | Path, num_actions: int) -> dict[str, Any]:
    """Read and check one episode file; UserError naming the file and the bad field."""
    import numpy as np

    path = Path(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected an npz file") from None
    except ValueError as err:  # neither zip nor npy: numpy would only try (refused) pickle
        why = "not an npz archive" if "pickle" in str(err) else str(err)
        raise UserError(f"{path}: not a readable npz file ({why})") from None
    except Exception as err:  # OSError, zipfile.BadZipFile (truncated download), ...
        raise UserError(f"{path}: not a readable npz file ({type(err).__name__}: {err})") from None
    if not hasattr(npz, "files"):
        raise UserError(f"{path}: holds a single array, expected an npz archive with named arrays")
    with npz:
        missing = [k for k in ("frames", *STEP_ARRAYS) if k not in npz.files]
        if missing:
            raise UserError(f"{path}: missing field(s) {', '.join(missing)} (has: {', '.join(npz.files) or 'none'})")
        try:
            arrays = {k: npz[k] for k in ("frames", *STEP_ARRAYS)}
        except ValueError as err:  # object arrays need pickle: refused
            raise UserError(f"{path}: unreadable array ({err})") from None
        except Exception as err:  # damaged zip member
            raise UserError(f"{path}: damaged npz ({type(err).__name__}: {err})") from None
    frames = arrays["frames"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise UserError(f"{path}: field frames must be (T+1, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    steps = frames.shape[0] - 1
    if steps < 1:
        raise UserError(f"{path}: field frames holds {frames.shape[0]} frame(s); an episode needs at least 2")
    for k in STEP_ARRAYS:
        a = arrays[k]
        if a.shape != (steps,):
            raise UserError(f"{path}: field {k} must have shape ({steps},) to match frames, got {a.shape}")
        if a.dtype.kind not in "biuf":
            raise UserError(f"{path}: field {k} must be numeric, got dtype {a.dtype}")
    actions = arrays["actions"]
    if actions.dtype.kind == "f" and not np.all(actions == np.round(actions)):
        raise UserError(f"{path}: field actions must hold integers")
    bad = (actions < 0) | (actions >= num_actions)
    if bad.any():
        raise UserError(f"{path}: field actions holds {actions[bad][0].item()!r} at step {int(np.argmax(bad))}; "
                        f"the game has actions 0..{num_actions - 1}")
    for k in ("terminations", "truncations"):
        if not np.isin(arrays[k], (0, 1)).all():
            raise UserError(f"{path}: field {k} must be bool or 0/1")
    if not np.isfinite(arrays["rewards"]).all():
        raise UserError(f"{path}: field rewards holds NaN or infinity")
    arrays.update(_optional_fields(path, steps))
    return arrays


def _optional_fields(path: Path, steps: int) -> dict[str, Any]:
    """`audio` (T, S) uint8 and `events` (T,) JSON strings, as `train.py export` writes them."""
    import numpy as np

    from engine.recorder import decode_events

    out: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as npz:
        try:
            audio = npz["audio"] if "audio" in npz.files else None
            events = npz["events"] if "events" in npz.files else None
        except ValueError as err:
            raise UserError(f"{path}: unreadable array ({err})") from None
    if audio is not None:
        if audio.dtype != np.uint8 or audio.ndim != 2 or audio.shape[0] != steps:
            raise UserError(f"{path}: field audio must be ({steps}, S) uint8, got {audio.shape} {audio.dtype}")
        out["audio"] = audio
    if events is not None:
        if events.dtype.kind != "U" or events.shape != (steps,):
            raise UserError(f"{path}: field events must be ({steps},) strings, got {events.shape} {events.dtype}")
        decoded = []
        for t, text in enumerate(events):
            try:
                decoded.append(decode_events(str(text)))
            except (ValueError, TypeError):
                raise UserError(f"{path}: field events at step {t} is not a JSON list of "
                                f"[name, prompt] pairs: {str(text)[:60]!r}") from None
        out["events"] = decoded
    return out


def run_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.dataset import open_dataset
    from engine.games import find_game
    from engine.recorder import Recorder
    from engine.simulator import Step, WorldEvent

    spec = find_game(args.game, frameskip=args.frameskip, action_repeat=args.action_repeat)
    rec = Recorder(args.out, spec, extra_meta={"source": "import"})
    # Check every file before writing any (one at a time: imports can be larger than memory).
    shapes: dict[tuple[int, ...], str] = {}
    if rec.root_frame_shape is not None:
        shapes[tuple(rec.root_frame_shape)] = f"the episodes already in {args.out}"
    for f in tqdm(args.files, unit="file", desc="check", leave=False, disable=len(args.files) < 20):
        shapes.setdefault(load_npz_episode(f, spec.num_actions)["frames"].shape[1:], f)
    if len(shapes) > 1:
        listed = ", ".join(f"{'x'.join(map(str, k[:2]))} ({v})" for k, v in shapes.items())
        raise UserError(f"frame sizes differ: {listed}; import them into separate directories")
    total = 0
    with rec:
        for path in tqdm(args.files, unit="ep", desc="import"):
            ep = load_npz_episode(path, spec.num_actions)
            rec.extra_meta["file"] = str(Path(path).resolve())
            rec.begin_episode(ep["frames"][0], None)
            audio, events = ep.get("audio"), ep.get("events")
            for t in range(ep["frames"].shape[0] - 1):
                rec.add(int(ep["actions"][t]), Step(
                    frame=ep["frames"][t + 1], reward=float(ep["rewards"][t]),
                    terminated=bool(ep["terminations"][t]), truncated=bool(ep["truncations"][t]),
                    audio=None if audio is None else audio[t]),
                    [WorldEvent(n, p) for n, p in events[t]] if events is not None else ())
            rec.end_episode()
            total += ep["frames"].shape[0] - 1
    ds = open_dataset(args.out)
    print(f"imported {len(args.files)} episodes, {total} steps into {args.out} "
          f"(now {len(ds)} episodes, {ds.num_steps} steps)")
    return 0


# --- export ------------------------------------------------------------------------------


def run_export(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from engine.dataset import open_dataset

    ds = open_dataset(args.data)
    chosen = list(range(len(ds))) if not args.episodes else args.episodes
    bad = [i for i in chosen if not 0 <= i < len(ds)]
    if bad:
        raise UserError(f"--episodes {bad[0]}: the dataset has episodes 0..{len(ds) - 1}")
    out = Path(args.out)
    taken = [out / f"{ds.episodes[i].path.name}.npz" for i in chosen]
    taken = [f for f in taken if f.exists()]
    if taken:  # never replace a file the user has, e.g. an earlier export they edited
        raise UserError(f"{out} already holds {taken[0].name}"
                        f"{f' and {len(taken) - 1} more of the files to write' if len(taken) > 1 else ''}; "
                        "export into another directory, or remove them first")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write to {out}: {err.strerror or err}") from None
    skipped = 0
    for i in tqdm(chosen, unit="ep", desc="export"):
        ep = ds.load(i)
        if ep.num_steps < 1:  # nothing readable was recorded: import would refuse the file
            skipped += 1
            continue
        arrays: dict[str, Any] = {
            "frames": ep.observations, "actions": ep.actions, "rewards": ep.rewards,
            "terminations": ep.terminations, "truncations": ep.truncations}
        if ep.audio is not None:
            arrays["audio"] = ep.audio
        if any(ep.events):
            arrays["events"] = np.asarray(
                [json.dumps([list(p) for p in step], ensure_ascii=False) if step else "" for step in ep.events],
                dtype=np.str_)
        name = out / f"{ds.episodes[i].path.name}.npz"
        tmp = name.with_name(f".{name.name}.tmp")
        with open(tmp, "wb") as fh:  # written under a temp name, then renamed: never half a file
            np.savez_compressed(fh, **arrays)
        tmp.replace(name)
    note = f" ({skipped} without a readable step skipped)" if skipped else ""
    print(f"exported {len(chosen) - skipped} episodes to {out}{note}")
    return 0


# --- info --------------------------------------------------------------------------------


def _disk_bytes(root: Path) -> tuple[int, int]:
    """(bytes of the recordings, bytes of the model-resolution frame cache under .cache/)."""
    cache = root / ".cache"
    files = [p for p in root.rglob("*") if p.is_file()]
    cached = sum(p.stat().st_size for p in files if cache in p.parents)
    return sum(p.stat().st_size for p in files) - cached, cached


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def summarize(root: str | Path) -> dict[str, Any]:
    """Everything `info` prints, as a dict (reads actions/rewards/events only, never frames)."""
    import numpy as np

    from engine.dataset import decode_events, open_dataset
    from engine.recorder import episode_source

    ds = open_dataset(root)
    returns: list[float] = []
    lengths: list[int] = []
    actions: Counter[int] = Counter()
    onsets: Counter[str] = Counter()
    event_steps: Counter[str] = Counter()
    terminated = 0
    sources = Counter(episode_source(e.meta) for e in ds.episodes)
    for i in range(len(ds)):
        cols = ds.read(i, ("actions", "rewards", "terminations", "events"))
        returns.append(float(cols["rewards"].sum(dtype=np.float64)))
        lengths.append(int(cols["actions"].shape[0]))
        actions.update(cols["actions"].tolist())
        terminated += bool(cols["terminations"].any())
        previous: set[str] = set()
        for text in cols["events"]:
            names = {name for name, _ in decode_events(str(text))}
            onsets.update(names - previous)
            event_steps.update(names)
            previous = names
    steps = sum(lengths)
    meanings = ds.spec.action_meanings
    recorded, cached = _disk_bytes(Path(root))
    return {
        "root": str(root), "game": ds.spec.name, "env_id": ds.spec.env_id,
        "episodes": len(ds), "complete": sum(e.complete for e in ds.episodes), "terminated": terminated,
        "sources": dict(sources.most_common()),
        "steps": steps, "hours_of_play": steps / ds.spec.steps_per_second / 3600,
        "episode_steps": {"mean": float(np.mean(lengths)), "min": min(lengths), "max": max(lengths)},
        "returns": {"mean": float(np.mean(returns)), "min": min(returns), "max": max(returns)},
        "actions": {(meanings[a] if 0 <= a < len(meanings) else str(a)): actions.get(a, 0)
                    for a in sorted(set(range(len(meanings))) | set(actions))},
        "event_onsets": dict(onsets.most_common()), "event_steps": dict(event_steps.most_common()),
        "observation_shape": ds.episodes[0].meta["observation_shape"],
        "audio_rate": ds.spec.audio_rate, "bytes_on_disk": recorded, "cache_bytes": cached,
    }


def run_info(args: argparse.Namespace) -> int:
    from engine.files import write_atomic

    json_path = output_file(args.json) if args.json else None
    s = summarize(args.data)
    steps = max(s["steps"], 1)
    ep = s["episode_steps"]
    r = s["returns"]
    lines = [
        f"dataset   {s['root']}: {s['game']} ({s['env_id']}), frames {'x'.join(map(str, s['observation_shape']))}",
        f"episodes  {s['episodes']} ({s['complete']} closed cleanly, {s['terminated']} reached game over); "
        f"played by {', '.join(f'{k} {n}' for k, n in s['sources'].items())}",
        f"steps     {s['steps']} ({s['hours_of_play'] * 60:.1f} min of play); per episode mean "
        f"{ep['mean']:.0f}, min {ep['min']}, max {ep['max']}",
        f"returns   mean {r['mean']:.2f}, min {r['min']:.2f}, max {r['max']:.2f}",
        "actions",
    ]
    width = max(len(m) for m in s["actions"])
    for meaning, count in s["actions"].items():
        bar = "#" * round(40 * count / steps)
        lines.append(f"  {meaning:<{width}} {count:>9} {100 * count / steps:5.1f}% {bar}")
    if s["event_onsets"]:
        lines.append("events    onsets, steps active")
        ew = max(len(n) for n in s["event_onsets"])
        for name, n in s["event_onsets"].items():
            lines.append(f"  {name:<{ew}} {n:>9} {s['event_steps'][name]:>9}")
    else:
        lines.append("events    none recorded")
    cache = f"; frame cache for training {_human(s['cache_bytes'])}" if s["cache_bytes"] else ""
    lines.append(f"on disk   {_human(s['bytes_on_disk'])} ({s['bytes_on_disk'] / steps / 1024:.1f} KiB per step){cache}")
    print("\n".join(lines))
    if json_path is not None:
        write_atomic(json_path, json.dumps(s, indent=1).encode(), durable=False)
    return 0

"""`train.py eval`: measure a trained world model on held-out recordings.

Open-loop rollouts start from C real context frames and follow the recorded actions; generated
frames are compared with the real ones at horizons 1, 4, 16, 64 (PSNR, SSIM). Action following:
PSNR@16 with the recorded actions minus PSNR@16 with the actions shuffled across rollouts (each
rollout gets another one's recorded actions; same noise), as Genie's controllability figure.
Not shuffled in time: where a paddle ends after 16 steps depends on the net count of LEFT and
RIGHT, which a permutation in time keeps. Drift: long rollouts (default 1,000 steps) whose
frames are compared with their nearest real frame of the training episodes (RMSE in [0, 1] at
32x32), against the same distance for real held-out frames. Reward and termination F1 over every
step of the open-loop rollouts (a reward is "predicted" when the predicted reward is non-zero,
an end when its probability exceeds 0.5); and the same one step ahead of real context at every
held-out step (`reward_f1_1`): in open loop a point scored one step early or late counts as two
misses, so the one-step figure is what says whether the model keeps score.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

HORIZONS = (1, 4, 16, 64)
DRIFT_AT = (100, 500, 1000)

HELP = "measure a trained world model on held-out episodes"
EPILOG = """\
examples:
  python train.py eval --checkpoint runs/bk --data data/breakout --json eval.json
  python train.py eval --checkpoint checkpoints/breakout --data data/breakout --episodes 5 --max-rollouts 32
Writes the JSON (psnr, ssim, level_shift (mean brightness, generated minus real, in grey
levels) by horizon, action_dpsnr_16, drift, reward_f1 of the
scoring steps (reward > 0), termination_f1, ...),
a plot of the metrics by horizon and a strip of real (top) over generated (bottom) frames."""


def _same_data(data: Path, recs: Any, data_cfg: dict[str, Any]) -> bool:
    """Is `data` the recording the run trained on (so its held-out split applies)?

    The stored path may be relative (shipped checkpoints say data/breakout) or point into
    another machine; a directory of the same name whose first episodes add up to the stored
    step count is the same data, possibly with episodes appended since.
    """
    stored = data_cfg.get("path")
    if not stored:
        return False
    if Path(stored).resolve() == data.resolve():
        return True
    n, steps = data_cfg.get("episodes"), data_cfg.get("steps")
    if Path(stored).name != data.resolve().name or not isinstance(n, int) or n > len(recs.episodes):
        return False
    return sum(recs.episodes[i].num_steps for i in range(n)) == steps


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `eval` subcommand to train.py's parser."""
    p = sub.add_parser("eval", help=HELP, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory (train.py fit --out)")
    p.add_argument("--data", required=True, metavar="DIR", help="recordings of the same game")
    p.add_argument("--json", metavar="FILE", help="write the figures here (default RUN/eval/eval.json)")
    p.add_argument("--episodes", type=int, metavar="N", help="use at most N held-out episodes")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the model runs (default auto: cuda if available, else cpu)")
    p.add_argument("--sampler", metavar="PRESET", help="sampler preset (default: the checkpoint's)")
    p.add_argument("--max-rollouts", type=int, default=64, metavar="N", help="open-loop rollouts (default 64)")
    p.add_argument("--max-horizon", type=int, default=64, metavar="H", help="longest open-loop horizon (default 64)")
    p.add_argument("--drift-steps", type=int, default=1000, metavar="N", help="length of drift rollouts (0: skip)")
    p.add_argument("--drift-rollouts", type=int, default=4, metavar="N", help="drift rollouts (default 4)")
    p.add_argument("--batch", type=int, default=32, metavar="B", help="rollouts generated together")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one-step", type=int, default=4096, metavar="N",
                   help="held-out steps predicted one step ahead for reward_f1_1 (0: skip; default 4096)")
    p.add_argument("--events", action="store_true",
                   help="also measure event fidelity (needs held-out episodes with event onsets)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _starts(recs: Any, episodes: list[int], context: int, horizon: int, count: int) -> list[tuple[int, int, int]]:
    """(episode, first context frame, steps) for up to `count` rollouts spread evenly."""
    usable = [i for i in episodes if recs.episodes[i].num_steps >= context]
    if not usable:
        return []
    per = max(1, math.ceil(count / len(usable)))
    out = []
    for i in usable:
        n = recs.episodes[i].num_steps
        last = max(0, n - (context - 1) - horizon)
        for s in sorted({int(round(x)) for x in _linspace(0, last, per)}):
            out.append((i, s, min(horizon, n - (context - 1) - s)))
    step = len(out) / count if len(out) > count else 1.0
    return [out[int(k * step)] for k in range(min(count, len(out)))]


def _linspace(a: float, b: float, n: int) -> list[float]:
    return [a] if n == 1 else [a + (b - a) * k / (n - 1) for k in range(n)]


def open_loop(model: Any, recs: Any, items: list[tuple[int, int, int]], horizon: int, bank: Any,
              device: Any, batch: int, seed: int, progress: Any) -> dict[str, Any]:
    """PSNR/SSIM by horizon, action dPSNR@16, reward/termination F1 and a strip of rollouts."""
    import numpy as np
    import torch

    from models.metrics import f1_score, gather_windows, psnr, rollout, ssim

    c = int(model.context_frames)
    ps, ss, lv, valid, pred_r, true_r, pred_e, true_e = [], [], [], [], [], [], [], []
    shuffled_gap: list[float] = []
    strip_rows: list[Any] = []
    for lo in range(0, len(items), batch):
        chunk = items[lo: lo + batch]
        g = gather_windows(recs, chunk, c, horizon, device)
        g["events"] = torch.from_numpy(g["active"] @ bank).to(device)
        gen = torch.Generator(device=device).manual_seed(seed + lo)
        frames, rew, end = rollout(model, g["frames"][:, :c], g["actions"], g["events"], horizon, gen)
        real = g["frames"][:, c:]
        b = real.shape[0]
        ps.append(psnr(frames.flatten(0, 1), real.flatten(0, 1)).view(b, horizon).cpu().numpy())
        ss.append(ssim(frames.flatten(0, 1), real.flatten(0, 1)).view(b, horizon).cpu().numpy())
        # Mean brightness gap in grey levels (frames span 2 units = 255 levels), (B, horizon):
        # a model that tints or darkens the world unprompted shows it here before PSNR says why.
        lv.append(((frames - real).float().mean(dim=(2, 3, 4)) * 127.5).cpu().numpy())
        valid.append(g["valid"])
        # Scoring steps (reward > 0): CarRacing pays -0.2 on almost every step, so "any
        # reward" would be a trivial F1 of 1 there.
        pred_r.append(rew.cpu().numpy() > 0)
        true_r.append(g["rewards"] > 0)
        pred_e.append(end.cpu().numpy() > 0.5)
        true_e.append(g["ends"] > 0.5)
        if len(strip_rows) < 8:
            show = [h - 1 for h in (1, 2, 4, 8, 16, 32, 64) if h <= horizon]
            for k in range(min(4 - len(strip_rows) // 2, b)):
                strip_rows += [real[k, show], frames[k, show]]
        h16 = min(16, horizon)
        if g["valid"][:, h16 - 1].any():
            # The same rollouts, each given another rollout's actions for the generated steps
            # (uniformly random ones when a chunk holds a single rollout).
            acts = g["actions"].clone()
            span = slice(c - 1, c - 1 + h16)
            if b > 1:
                acts[:, span] = g["actions"].roll(1, dims=0)[:, span]
            else:
                acts[:, span] = torch.randint(0, int(model.num_actions), acts[:, span].shape,
                                              generator=torch.Generator().manual_seed(seed + lo + 1)).to(acts.device)
            gen = torch.Generator(device=device).manual_seed(seed + lo)
            shuf, _, _ = rollout(model, g["frames"][:, :c], acts, g["events"], h16, gen)
            keep = torch.from_numpy(g["valid"][:, h16 - 1]).to(device)
            p_rec = psnr(frames[:, h16 - 1], real[:, h16 - 1])[keep]
            p_shuf = psnr(shuf[:, h16 - 1], real[:, h16 - 1])[keep]
            shuffled_gap += (p_rec - p_shuf).cpu().tolist()
        progress.update(len(chunk))
    P, S, L, V = np.concatenate(ps), np.concatenate(ss), np.concatenate(lv), np.concatenate(valid)

    def at(table: np.ndarray, h: int) -> float | None:
        if h > horizon or not V[:, h - 1].any():
            return None
        return round(float(table[V[:, h - 1], h - 1].mean()), 4)

    reward_f1, reward_counts = f1_score(np.concatenate(pred_r)[V], np.concatenate(true_r)[V])
    end_f1, end_counts = f1_score(np.concatenate(pred_e)[V], np.concatenate(true_e)[V])
    return {
        "psnr": {str(h): at(P, h) for h in HORIZONS}, "ssim": {str(h): at(S, h) for h in HORIZONS},
        "level_shift": {str(h): at(L, h) for h in HORIZONS},
        "action_dpsnr_16": round(float(np.mean(shuffled_gap)), 4) if shuffled_gap else None,
        "reward_f1": reward_f1, "termination_f1": end_f1,
        "reward_counts": reward_counts, "termination_counts": end_counts,
        "rollouts": len(items), "strip_rows": strip_rows,
    }


def one_step_items(recs: Any, held: list[int], context: int, cap: int) -> list[tuple[int, int, int]]:
    """(episode, first context frame, 1) for up to `cap` held-out steps spread evenly."""
    items = [(i, s, 1) for i in held for s in range(recs.episodes[i].num_steps - context + 1)]
    return [items[int(k * len(items) / cap)] for k in range(cap)] if len(items) > cap else items


def one_step(model: Any, recs: Any, items: list[tuple[int, int, int]], bank: Any, device: Any,
             batch: int, seed: int, progress: Any) -> dict[str, Any]:
    """Reward and termination F1 of one-step predictions from real context at `items`
    (`one_step_items`; rewards > 0 are scoring steps, as above)."""
    import numpy as np
    import torch

    from models.metrics import f1_score, gather_windows, rollout

    if not items:
        return {"reward_f1_1": None, "termination_f1_1": None, "one_step_count": 0}
    c = int(model.context_frames)
    pred_r, true_r, pred_e, true_e = [], [], [], []
    for lo in range(0, len(items), batch):
        g = gather_windows(recs, items[lo: lo + batch], c, 1, device)
        events = torch.from_numpy(g["active"] @ bank).to(device)
        gen = torch.Generator(device=device).manual_seed(seed + lo)
        _, rew, end = rollout(model, g["frames"][:, :c], g["actions"], events, 1, gen)
        pred_r.append(rew[:, 0].cpu().numpy() > 0)
        true_r.append(g["rewards"][:, 0] > 0)
        pred_e.append(end[:, 0].cpu().numpy() > 0.5)
        true_e.append(g["ends"][:, 0] > 0.5)
        progress.update(len(items[lo: lo + batch]))
    reward_f1, reward_counts = f1_score(np.concatenate(pred_r), np.concatenate(true_r))
    end_f1, _ = f1_score(np.concatenate(pred_e), np.concatenate(true_e))
    return {"reward_f1_1": reward_f1, "termination_f1_1": end_f1, "reward_counts_1": reward_counts,
            "one_step_count": len(items)}


def _small(frames: Any) -> Any:
    """(N, 3, R, R) in [-1, 1] -> (N, 3*32*32) in [0, 1] for nearest-frame search."""
    import torch.nn.functional as F

    x = (frames.float() + 1) / 2
    if x.shape[-1] != 32:
        x = F.interpolate(x, size=(32, 32), mode="area")
    return x.flatten(1)


def _nearest(queries: Any, reference: Any) -> Any:
    """RMSE of each query to its nearest reference row: (Q, D), (R, D) -> (Q,)."""
    import torch

    d = queries.shape[1]
    best = []
    for lo in range(0, queries.shape[0], 256):
        q = queries[lo: lo + 256]
        dist = torch.cdist(q, reference).min(1).values  # Euclidean distance
        best.append(dist / math.sqrt(d))
    return torch.cat(best)


def drift(model: Any, recs: Any, reference_eps: list[int], held: list[int], steps: int, count: int,
          device: Any, seed: int, progress: Any) -> dict[str, Any]:
    """Distance of long-rollout frames to the nearest real frame, at steps 100/500/1000."""
    import numpy as np
    import torch

    from models.data import split_episodes

    c = int(model.context_frames)
    base_eps = [i for i in held if i not in set(reference_eps)]
    if not base_eps:  # evaluating on the training data itself: measure the baseline across halves
        if len(reference_eps) < 2:
            return {"note": "drift needs two or more episodes"}
        a, b = split_episodes(len(reference_eps), 0.5)
        reference_eps, base_eps = [reference_eps[k] for k in a], [reference_eps[k] for k in b]
    ref_frames = np.concatenate([recs.episodes[i].frames for i in reference_eps])
    pick = np.linspace(0, len(ref_frames) - 1, min(4000, len(ref_frames))).astype(int)
    reference = _small(torch.from_numpy(ref_frames[pick]).to(device).float().div(127.5).sub(1))
    held_frames = np.concatenate([recs.episodes[i].frames for i in base_eps])
    pick = np.linspace(0, len(held_frames) - 1, min(256, len(held_frames))).astype(int)
    baseline = float(_nearest(_small(torch.from_numpy(held_frames[pick]).to(device).float().div(127.5).sub(1)),
                              reference).mean())
    # Context: episode starts; actions: the held-out episodes' recorded actions, cycled.
    usable = [i for i in held if recs.episodes[i].num_steps >= c]
    ctx = torch.stack([torch.from_numpy(np.array(recs.episodes[usable[k % len(usable)]].frames[:c]))
                       for k in range(count)]).to(device).float().div(127.5).sub(1)
    pool = np.concatenate([recs.episodes[i].actions for i in held])
    acts = np.stack([np.roll(pool, -k * 97)[np.arange(c - 1 + steps) % len(pool)] for k in range(count)])
    actions = torch.from_numpy(acts).to(device)
    events = torch.zeros(count, 384, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    state = model.start(ctx, actions[:, : c - 1])
    marks = sorted({s for s in DRIFT_AT if s <= steps} | {steps})
    window: dict[int, list[float]] = {s: [] for s in marks}
    with torch.no_grad():
        for t in range(1, steps + 1):
            state, pred = model.advance(state, actions[:, c - 2 + t], events, gen)
            for s in marks:
                if s - 10 < t <= s:  # mean over the last 10 frames up to each mark
                    window[s].append(float(_nearest(_small(pred.frame), reference).mean()))
            progress.update(count)
    out: dict[str, Any] = {str(s): round(float(np.mean(v)), 5) for s, v in window.items()}
    out["real_baseline"] = round(baseline, 5)
    out["distance"] = "RMSE in [0,1] at 32x32 to the nearest of up to 4000 training frames"
    return out


def _events(model: Any, recs: Any, held: list[int], loaded: Any, device: Any,
            args: argparse.Namespace) -> tuple[dict[str, Any], list[Any]]:
    """Event fidelity (models/event_fidelity.py), or a note when the run knows no events."""
    from models.event_fidelity import event_fidelity

    trained = (loaded.config.get("events") or {}).get("trained") or []
    if not trained:
        return {"note": f"{args.checkpoint} was trained without events"}, []
    try:
        from engine.events import load_catalog

        kinds = {name: str(spec.kind) for name, spec in load_catalog().events.items()}
    except Exception:  # the catalog only labels events look/dynamics
        kinds = {}
    result, rows = event_fidelity(model, recs, held, loaded.event_bank, horizon=min(16, args.max_horizon),
                                  device=device, seed=args.seed, kinds=kinds)
    result["trained"] = trained
    return result, rows


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from engine.dataset import open_dataset
    from engine.errors import UserError, output_file
    from engine.files import write_atomic
    from models.checkpoint import load_run
    from models.commands.fit import pick_device
    from models.data import Recordings, split_episodes
    from models.metrics import plot_by_horizon, strip, write_png

    for name in ("max_rollouts", "max_horizon", "batch", "drift_rollouts"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("one_step", "drift_steps", "seed"):  # with the others, before any model or data loads
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0")
    if args.episodes is not None and args.episodes < 1:
        raise UserError("--episodes must be >= 1 (leave it out to use every held-out episode)")
    json_path = output_file(args.json) if args.json else None  # a bad path fails before the work
    device = pick_device(args.device)
    loaded = load_run(args.checkpoint, device)
    model: Any = loaded.model
    if args.sampler:
        model.set_sampler(args.sampler)
    dataset = open_dataset(args.data)
    if dataset.spec.name != loaded.spec.name:
        raise UserError(f"{args.checkpoint} is a {loaded.spec.name} model, but {args.data} holds "
                        f"{dataset.spec.name} episodes")
    names = sorted(loaded.event_bank)
    recs = Recordings(dataset, int(model.resolution), names, progress=not args.no_progress)
    bank = np.stack([loaded.event_bank[n] for n in names]) if names else np.zeros((1, 384), np.float32)

    data_cfg = loaded.config.get("data") or {}
    same = _same_data(Path(args.data), recs, data_cfg)
    held = [i for i in data_cfg.get("heldout_episodes", []) if i < len(recs.episodes)] if same else []
    if held:
        train = [i for i in range(len(recs.episodes)) if i not in set(held)]
        split = "held-out split of training"
    elif same:
        train, held = split_episodes(len(recs.episodes), 0.0)[0], list(range(len(recs.episodes)))
        split = "all episodes (the run has no held-out split)"
    else:
        train, held = list(range(len(recs.episodes))), list(range(len(recs.episodes)))
        split = "all episodes (data other than the training data)"
    if args.episodes is not None:
        held = held[: args.episodes]
    c = int(model.context_frames)
    items = _starts(recs, held, c, args.max_horizon, args.max_rollouts)
    if not items:
        raise UserError(f"no held-out episode in {args.data} has the {c} frames a rollout needs")
    horizon = max(n for _, _, n in items)

    steps_1 = one_step_items(recs, held, c, args.one_step)
    total = len(items) * 2 + (args.drift_rollouts * args.drift_steps if args.drift_steps else 0) + len(steps_1)
    with tqdm(total=total, desc="eval", unit="rollout", disable=args.no_progress) as bar:
        result = open_loop(model, recs, items, horizon, bank, device, args.batch, args.seed, bar)
        if args.one_step:
            result.update(one_step(model, recs, steps_1, bank, device, max(args.batch, 64), args.seed, bar))
        result["drift"] = (drift(model, recs, train, held, args.drift_steps, args.drift_rollouts,
                                 device, args.seed, bar) if args.drift_steps else None)
    strip_rows = result.pop("strip_rows")
    out = {**result, "episodes": [int(i) for i in held], "split": split,
           "checkpoint": str(args.checkpoint), "data": str(args.data),
           "sampler": getattr(model, "sampler_name", None), "device": str(device)}
    event_rows: list[Any] = []
    if args.events:
        out["events"], event_rows = _events(model, recs, held, loaded, device, args)

    json_path = json_path or output_file(str(Path(args.checkpoint) / "eval" / "eval.json"))
    write_atomic(json_path, (json.dumps(out, indent=1) + "\n").encode(), durable=False)
    stem = json_path.with_suffix("")
    hs = [h for h in HORIZONS if h <= horizon]
    plot_by_horizon(f"{stem}_horizons.png", hs, {
        "PSNR (dB)": [out["psnr"][str(h)] for h in hs], "SSIM": [out["ssim"][str(h)] for h in hs]})
    if strip_rows:
        write_png(f"{stem}_strip.png", strip(strip_rows))
    if event_rows:
        write_png(f"{stem}_events.png", strip(event_rows))
    print(f"eval of {args.checkpoint} on {len(items)} rollouts from {len(held)} episodes ({split}):")
    print("  PSNR " + "  ".join(f"@{h} {out['psnr'][str(h)]}" for h in hs))
    print("  SSIM " + "  ".join(f"@{h} {out['ssim'][str(h)]}" for h in hs))
    print("  brightness, generated minus real (grey levels) "
          + "  ".join(f"@{h} {out['level_shift'][str(h)]:+.1f}" for h in hs if out['level_shift'][str(h)] is not None))
    print(f"  action dPSNR@16 {out['action_dpsnr_16']}  reward F1 {out['reward_f1']}  "
          f"termination F1 {out['termination_f1']}")
    if out.get("one_step_count"):
        print(f"  one step ahead, {out['one_step_count']} steps: reward F1 {out['reward_f1_1']}  "
              f"termination F1 {out['termination_f1_1']}")
    if out["drift"]:
        print(f"  drift {out['drift']}")
    if args.events:
        ev = out["events"]
        print(f"  events: {ev.get('note') or {k: v for k, v in ev.items() if k.startswith('mean_')}}")
        few = sorted(f"{k} {e['onsets']}" for k, e in (ev.get("per_event") or {}).items() if e["onsets"] < 8)
        if few:  # one onset can swing an event's figure by several dB
            print(f"  note: few held-out onsets ({', '.join(few)}); those events' figures are rough. "
                  "Evaluate on more episodes recorded with --events random.")
    print(f"wrote {json_path}, {stem}_horizons.png, {stem}_strip.png")
    return 0

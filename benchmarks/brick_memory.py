#!/usr/bin/env python
"""Does a Breakout world model keep the bricks the player broke, and rebuild them when asked?

From real context frames in which some bricks are missing and no event is on, a model rolls
out `--horizon` steps with the recorded actions three times: with no event vector, with the
`rebuild_wall` event starting on the first generated step, and with it already on over the
context (its onset earlier, so nothing is due now). The figure is the share of the brick band
(the rows the start frame's wall fills, 64x64) that is dark, at steps 1, 4, 8 and 16:

- **without the event** it should stay near the context's share: the holes persist.
- **with the event** it should drop to ~0: the wall comes back.
- **with the event already on** the holes should persist as well: the wall is rebuilt once, at
  the onset. Only a model that sees the onset (`model.event_onset`) can tell this case from the
  last; one that sees the vector alone answers both the same.

A model that refills the holes by itself cannot show a prompted rebuild, which is what
`train.py eval --events` then scores as a rebuilt wall below 0 dB.

examples:
  python benchmarks/brick_memory.py --checkpoint checkpoints/breakout-diffusion --data data/breakout_eval
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.dataset import open_dataset  # noqa: E402
from engine.errors import ArgumentParser, UserError, run_command  # noqa: E402
from models.checkpoint import load_run  # noqa: E402
from models.data import Recordings  # noqa: E402
from models.metrics import rollout  # noqa: E402
from models.world import EVENT_DIM  # noqa: E402

DARK = 20  # grey level below which a brick-band pixel counts as a hole (bricks are 70-140)
STEPS = (1, 4, 8, 16)


def open_breakout(checkpoint: str, data: str, measures: str) -> tuple[Any, Recordings]:
    """The run at `checkpoint` and the recordings in `data`, both of Breakout, or one error line
    naming what this probe `measures` (e.g. "Breakout's ball"). ball_tracking.py uses it too."""
    run = load_run(checkpoint)
    if run.spec.name != "breakout":
        raise UserError(f"{checkpoint} is a {run.spec.name} model; this measures {measures}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recs = Recordings(open_dataset(data), int(run.model.resolution), sorted(run.event_bank),  # type: ignore[arg-type]
                          progress=False)
    if recs.spec.name != "breakout":
        raise UserError(f"{data} holds {recs.spec.name}, not Breakout")
    return run, recs


def brick_rows(frame: np.ndarray) -> list[int]:
    """Rows of a (3, R, R) uint8 frame where the wall is bright across the middle (the wall lies
    between a sixth and half of the height)."""
    gray = np.asarray(frame, np.float32).mean(0)  # (R, R)
    r = gray.shape[0]
    profile = gray[:, r // 6: -r // 6].mean(1)
    return [y for y in range(r // 6, r // 2) if profile[y] > 40]


def hole_share(gray: np.ndarray, rows: list[int]) -> float:
    """gray: (..., R, R) grey levels; the dark share of the brick band, walls excluded."""
    return float((gray[..., rows, 4:-4] < DARK).mean())


def main() -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a Breakout world model run directory")
    p.add_argument("--data", required=True, metavar="DIR", help="Breakout recordings to take context from")
    p.add_argument("--windows", type=int, default=16, help="context windows with holes (default 16)")
    p.add_argument("--horizon", type=int, default=16, help="steps rolled out (default 16)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    if args.windows < 1 or args.horizon < max(STEPS):
        raise UserError(f"--windows must be >= 1 and --horizon >= {max(STEPS)}")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise UserError(f"--json {args.json}: no such directory")
    run, recs = open_breakout(args.checkpoint, args.data, "Breakout's bricks")
    if "rebuild_wall" not in run.event_bank:
        raise UserError(f"{args.checkpoint} was not trained with the rebuild_wall event")
    model, C, H = run.model, int(run.model.context_frames), args.horizon
    rows = brick_rows(recs.episodes[0].frames[0])  # the brick band of the first frame
    picks: list[tuple[int, int]] = []
    for e, ep in enumerate(recs.episodes):
        for s in range(50, ep.num_steps - C - H, 37):
            gray = np.asarray(ep.frames[s + C - 1], np.float32).mean(0)
            if hole_share(gray, rows) > 0.03 and not np.asarray(ep.events[s: s + C + H]).any():
                picks.append((e, s))
    if not picks:
        raise UserError(f"no event-free window in {args.data} has broken bricks to keep")
    picks = picks[:: max(1, len(picks) // args.windows)][: args.windows]
    eps = recs.episodes
    raw = torch.stack([torch.from_numpy(np.array(eps[e].frames[s: s + C])) for e, s in picks])  # (B, C, 3, R, R) uint8
    frames = raw.float() / 127.5 - 1
    actions = torch.stack([torch.from_numpy(np.asarray(eps[e].actions[s: s + C - 1 + H])) for e, s in picks]).long()
    plain = torch.zeros(len(picks), C - 1 + H, EVENT_DIM)
    prompted = plain.clone()
    prompted[:, C - 1:] = torch.from_numpy(run.event_bank["rebuild_wall"])
    already = plain.clone()
    already[:] = torch.from_numpy(run.event_bank["rebuild_wall"])  # on over the context too: no onset
    context = hole_share(raw[:, -1].float().mean(1).numpy(), rows)
    result: dict[str, object] = {"checkpoint": args.checkpoint, "windows": len(picks), "context": context}
    print(f"{len(picks)} windows, brick rows {rows[0]}-{rows[-1]}; holes in the last context frame: {context:.3f}")
    for name, events in (("without", plain), ("with_rebuild_wall", prompted), ("already_on", already)):
        with torch.no_grad():
            gen, _, _ = rollout(model, frames, actions, events, H, torch.Generator().manual_seed(0))
        gray = ((gen + 1) * 127.5).mean(2).numpy()  # (B, H, R, R)
        shares = {str(t): hole_share(gray[:, t - 1], rows) for t in STEPS}
        result[name] = shares
        print(f"  {name:<18} holes at steps {' / '.join(shares)}: "
              + " / ".join(f"{v:.3f}" for v in shares.values()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))

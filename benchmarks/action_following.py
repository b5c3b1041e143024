"""Does an Atari world model follow the keys? Counterfactual rollouts against the real emulator.

From real game states (a scripted player is stopped at random moments), every action is held
for `--hold` steps twice: in the real game (the emulator state is cloned and restored, so all
actions start from the same state) and in the world model (same C real context frames). For
each (state, action a) the model's last frame is compared with the real last frames of every
action b whose real outcome differs from a's:

- **accuracy**: the model's frame under a is closer (PSNR) to the real frame under a than to
  the real frame of any action with a different outcome. Chance is about 1 / (distinct
  outcomes): ~0.33 in Breakout (NOOP and FIRE move nothing while the ball is in play).
- **margin_db**: PSNR(model a, real a) minus the mean PSNR(model a, real b) over those b.

Both are also given for the same model made action-blind (its rollout under the first action
answers for every action): what a model that ignores the keys would score.

`train.py eval`'s action dPSNR@16 asks the same question with recorded actions in random order;
here the answer is per action and against what the game really does.

    python benchmarks/action_following.py --checkpoint checkpoints/breakout-diffusion --states 48
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def real_states(game: str, states: int, hold: int, context: int, resolution: int, seed: int,
                spacing: int = 29) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Context frames (S, C, 3, R, R) uint8, their actions (S, C-1), and the real frame after
    holding each action for `hold` steps, (S, A, 3, R, R) uint8."""
    from engine.autopilot import make_policy
    from engine.games import make_simulator
    from engine.real import AtariSimulator
    from models.data import resize_frames

    sim = make_simulator(game, audio=False)
    assert isinstance(sim, AtariSimulator), "states are branched with the Atari emulator's clone/restore"
    num_actions = sim.spec.num_actions
    policy = make_policy("scripted", sim.spec, seed)
    rng = np.random.default_rng(seed)
    ctx: list[np.ndarray] = []
    acts: list[np.ndarray] = []
    outcomes: list[np.ndarray] = []
    episode = 0
    while len(ctx) < states:
        frames = [sim.reset(seed=seed + episode)]
        actions: list[int] = []
        policy.reset()
        episode += 1
        next_stop = context + int(rng.integers(spacing))
        for t in range(5000):
            if t == next_stop:
                state = sim.ale.cloneState()
                finals = []
                for a in range(num_actions):
                    sim.ale.restoreState(state)
                    for _ in range(hold):
                        last = sim.step(a).frame
                    finals.append(last)
                sim.ale.restoreState(state)
                ctx.append(np.stack(frames[-context:]))
                acts.append(np.array(actions[-(context - 1):], np.int64))
                outcomes.append(np.stack(finals))
                next_stop += spacing + int(rng.integers(spacing))
                if len(ctx) == states:
                    break
            action = policy.act(frames[-1], sim)
            step = sim.step(action)
            frames.append(step.frame)
            actions.append(action)
            if step.terminated or step.truncated:
                break
    sim.close()

    def small(x: np.ndarray) -> np.ndarray:  # (..., H, W, 3) -> (..., 3, R, R)
        lead = x.shape[:-3]
        out = resize_frames(x.reshape(-1, *x.shape[-3:]), resolution)
        return out.reshape(*lead, *out.shape[1:])

    return small(np.stack(ctx)), np.stack(acts), small(np.stack(outcomes))


def score(model_frames: torch.Tensor, real: torch.Tensor, differs: np.ndarray,
          names: tuple[str, ...]) -> dict[str, object]:
    """Accuracy and margin of rollouts (S, A, 3, R, R) against real outcomes (S, A, 3, R, R)."""
    from models.metrics import psnr

    s, n_act = differs.shape[:2]
    # table[k, a, b] = PSNR(model under a, real under b)
    table = torch.stack([psnr(model_frames[:, a], real[:, b]) for a in range(n_act) for b in range(n_act)],
                        1).view(s, n_act, n_act).numpy()
    hits, margins, per_action = [], [], {}
    for a in range(n_act):
        row_hits = []
        for k in range(s):
            others = np.flatnonzero(differs[k, a])
            if not len(others):
                continue  # every action does the same here (e.g. between serves)
            row_hits.append(bool(table[k, a, a] > table[k, a, others].max()))
            margins.append(float(table[k, a, a] - table[k, a, others].mean()))
        hits += row_hits
        per_action[names[a]] = round(float(np.mean(row_hits)), 3) if row_hits else None
    return {"accuracy": round(float(np.mean(hits)), 3) if hits else None,
            "margin_db": round(float(np.mean(margins)), 3) if margins else None,
            "per_action_accuracy": per_action, "comparisons": len(hits)}


def main() -> int:
    from engine.errors import ArgumentParser, UserError  # a mistyped flag: one error line, exit 2
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="run directory of an Atari world model")
    p.add_argument("--states", type=int, default=48, help="real game states to branch from (default 48)")
    p.add_argument("--hold", type=int, default=4, help="steps each action is held (default 4)")
    p.add_argument("--sampler", help="sampler preset (default: the checkpoint's)")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()

    from models.checkpoint import load_run

    try:
        run = load_run(args.checkpoint)
        if run.spec.family != "atari":
            raise UserError(f"{args.checkpoint} is a {run.spec.name} model; this benchmark branches the Atari emulator")
        model: Any = run.model  # a DiffusionWorldModel or ARWorldModel (typed as Module)
        if args.sampler:
            model.set_sampler(args.sampler)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    c, r, n_act = int(model.context_frames), int(model.resolution), run.spec.num_actions
    ctx, acts, real = real_states(run.spec.name, args.states, args.hold, c, r, args.seed)
    s = len(ctx)
    with torch.inference_mode():
        x = torch.from_numpy(ctx).float().div(127.5).sub(1)  # (S, C, 3, R, R)
        gen = torch.Generator().manual_seed(args.seed)
        mine = []
        for a in range(n_act):
            state = model.start(x, torch.from_numpy(acts))
            for _ in range(args.hold):
                state, pred = model.advance(state, torch.full((s,), a), torch.zeros(s, 384), gen)
            mine.append(pred.frame)
        model_frames = torch.stack(mine, 1)  # (S, A, 3, R, R)
    real_t = torch.from_numpy(real).float().div(127.5).sub(1)
    differs = np.abs(real[:, :, None].astype(np.int16) - real[:, None].astype(np.int16)).reshape(
        s, n_act, n_act, -1).max(-1) > 0  # (S, A, A) outcomes of a and b differ
    names = run.spec.action_meanings
    # The same model made action-blind (its first action's rollout answers every action) is
    # the baseline: a margin or accuracy above it is the model following the keys.
    scores = {"model": score(model_frames, real_t, differs, names),
              "action_blind": score(model_frames[:, :1].expand_as(model_frames), real_t, differs, names)}
    distinct = [len({tuple(np.flatnonzero(~differs[k, a])) for a in range(n_act)}) for k in range(s)]
    result = {
        "checkpoint": args.checkpoint, "game": run.spec.name, "states": s, "hold": args.hold,
        "sampler": getattr(model, "sampler_name", None), **scores["model"],
        "action_blind": scores["action_blind"],
        "chance": round(float(np.mean([1 / d for d in distinct if d > 1])), 3) if any(d > 1 for d in distinct) else None,
    }
    blind = scores["action_blind"]
    print(f"{run.spec.name}: action accuracy {result['accuracy']} (action-blind {blind['accuracy']}, "
          f"chance {result['chance']}), margin {result['margin_db']} dB (action-blind {blind['margin_db']}) "
          f"over {result['comparisons']} (state, action) pairs; per action {result['per_action_accuracy']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

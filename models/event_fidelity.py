"""Event fidelity: does a world model show a world event when its prompt embedding is given?

For each event with onsets in the held-out episodes, rollouts start from the C real frames that
end at the onset and follow the recorded actions for `horizon` steps, twice with the same noise:
once conditioned on the event (a paraphrase embedding) and once without it (other active events
kept). dPSNR = PSNR(neural with the event vs real with it) - PSNR(neural without it vs real with
it) at the horizon. Done for the training paraphrases and for held-out paraphrases, which the
model never saw, to measure generalisation to new wordings. In play a wording reaches the model
only when the console's matcher acts on it (models.text.EventMatcher; it refuses e.g. "a
pea-souper rolls over everything", whose nearest phrasing is too far), so the held-out figure
is also given over the wordings the console understands as the event
(`dpsnr_16_heldout_understood`, with `heldout_understood` = "k/n" wordings), with their own
embeddings as the model input. `dpsnr_16_heldout_console` is what a player typing each held-out
wording gets by default: the model conditioned on the nearest training paraphrase of the event
the console understood (engine.console `conditioning="nearest"`), and no change at all
(0 dB) for a wording the console does not act on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.metrics import gather_windows, psnr, rollout


def event_onsets(recs: Any, episodes: list[int], column: int, context: int, horizon: int
                 ) -> list[tuple[int, int, int]]:
    """(episode, first context frame, horizon) of every onset of event `column` with C-1 frames
    before it and `horizon` recorded steps after it."""
    out = []
    for i in episodes:
        ep = recs.episodes[i]
        on = ep.events[:, column]
        for t in np.flatnonzero(on & ~np.concatenate([[False], on[:-1]])):
            s = int(t) - (context - 1)
            if s >= 0 and t + horizon <= ep.num_steps:
                out.append((i, s, horizon))
    return out


def paraphrase_banks(checkpoint_bank: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """{"seen": name -> (P, 384), "heldout": ...}: training and held-out paraphrase embeddings.

    Without the shipped bank (models.text), "seen" falls back to the checkpoint's mean vectors
    and "heldout" is left out.
    """
    banks: dict[str, dict[str, np.ndarray]] = {"seen": {k: v[None] for k, v in checkpoint_bank.items()}}
    try:
        from models.text import load_event_bank

        banks["seen"] = load_event_bank("train")
        banks["heldout"] = load_event_bank("heldout")
    except Exception as err:  # bank file missing or stale: measure what we can, say why
        print(f"note: paraphrase bank unavailable ({err}); using the checkpoint's event vectors")
        return banks
    try:
        understood, anchors = console_rows(banks["heldout"])
    except Exception as err:  # the matcher needs the encoder when the bank is stale
        print(f"note: console matching unavailable ({err}); held-out figures cover every wording")
        return banks
    banks["heldout_understood"] = {n: banks["heldout"][n][rows] for n, rows in understood.items() if len(rows)}
    banks["heldout_console"] = anchors
    return banks


def console_rows(heldout: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """What the console makes of each held-out wording.

    Returns (understood, anchors): event name -> indices of its held-out wordings that the
    console's matcher starts it for; and name -> (P, 384) the vector play conditions on for
    each wording (models.text.MatchResult.anchor), zeros where the console does nothing with it.
    """
    from models.text import EventMatcher, TextEncoder, load_event_prompts, read_bank

    texts = load_event_prompts("heldout")
    _, meta = read_bank()
    encoder = TextEncoder(model_path=meta.get("encoder"))  # only its name is read: the bank is current
    for name, rows in heldout.items():
        encoder.remember(texts[name], rows)
    matcher = EventMatcher(encoder)
    understood, anchors = {}, {}
    for name, rows in heldout.items():
        matches = [matcher.match(t) for t in texts[name]]
        hits = [(m.action, m.event) == ("start", name) for m in matches]
        understood[name] = np.flatnonzero(hits)
        anchors[name] = np.stack([m.anchor if hit and m.anchor is not None else np.zeros_like(rows[0])
                                  for m, hit in zip(matches, hits)]).astype(np.float32)
    return understood, anchors


@torch.no_grad()
def event_fidelity(model: Any, recs: Any, episodes: list[int], event_means: dict[str, np.ndarray],
                   horizon: int = 16, max_onsets: int = 16, device: Any = "cpu", seed: int = 0,
                   kinds: dict[str, str] | None = None) -> tuple[dict[str, Any], list[torch.Tensor]]:
    """Per-event dPSNR at `horizon` for seen and held-out paraphrases.

    Args:
        event_means: name -> (384,) vector the model uses for an event named without a prompt
            (the checkpoint's bank); used for the other events active in the same window.
        kinds: name -> "look" | "dynamics", copied into the result.
    Returns the result dict and image rows (real / with / without, per event) for a PNG grid.
    """
    c = int(model.context_frames)
    names = recs.event_names
    means = np.stack([event_means.get(n, np.zeros(384, np.float32)) for n in names]) if names else None
    banks = paraphrase_banks(event_means)
    key = {"seen": "dpsnr_16", "heldout": "dpsnr_16_heldout", "heldout_understood": "dpsnr_16_heldout_understood",
           "heldout_console": "dpsnr_16_heldout_console"}
    per_event: dict[str, Any] = {}
    rows: list[torch.Tensor] = []
    for col, name in enumerate(names):
        items = event_onsets(recs, episodes, col, c, horizon)[:max_onsets]
        if not items or means is None:
            continue
        g = gather_windows(recs, items, c, horizon, device)
        others = g["active"].copy()
        others[:, :, col] = 0
        base = torch.from_numpy(others @ means).to(device)  # (B, C-1+H, 384) other events only
        flags = torch.from_numpy(g["active"][:, :, col]).to(device)  # (B, C-1+H)
        real = g["frames"][:, c:]
        gen = torch.Generator(device=device).manual_seed(seed)
        without, _, _ = rollout(model, g["frames"][:, :c], g["actions"], base, horizon, gen)
        p_without = psnr(without[:, -1], real[:, -1])
        entry: dict[str, Any] = {"onsets": len(items), "kind": (kinds or {}).get(name)}
        for split, bank in banks.items():
            if name not in bank or not len(bank[name]):
                continue
            rows_p = torch.from_numpy(bank[name]).to(device).float()
            vec = rows_p[torch.arange(len(items), device=device) % rows_p.shape[0]]  # (B, 384)
            events = base + flags[..., None] * vec[:, None]
            gen = torch.Generator(device=device).manual_seed(seed)
            with_e, _, _ = rollout(model, g["frames"][:, :c], g["actions"], events, horizon, gen)
            gap = psnr(with_e[:, -1], real[:, -1]) - p_without
            entry[key[split]] = round(float(gap.mean()), 4)
            if split == "seen" and len(rows) < 12:
                show = [h - 1 for h in (1, 4, 8, 16) if h <= horizon]
                rows += [real[0, show], with_e[0, show], without[0, show]]
        if "heldout_understood" in banks and name in banks["heldout"]:
            entry["heldout_understood"] = (f"{len(banks['heldout_understood'].get(name, ()))}"
                                           f"/{len(banks['heldout'][name])}")
        per_event[name] = entry
    result: dict[str, Any] = {"horizon": horizon, "per_event": per_event}
    for k in key.values():
        for kind in ("look", "dynamics"):
            vals = [e[k] for e in per_event.values() if k in e and e["kind"] == kind]
            result[f"mean_{k}_{kind}"] = round(float(np.mean(vals)), 4) if vals else None
    if not per_event:
        result["note"] = "no event onsets in the held-out episodes (record with --events random)"
    return result, rows

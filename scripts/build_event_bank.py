"""Build assets/event_bank.safetensors: sentence embeddings of every paraphrase in assets/events.yaml.

Training and evaluation read this bank (models.text.load_event_bank) instead of running the text
encoder, which the training machine may not have. The bank stores the sha256 of events.yaml, so a
bank older than the yaml is detected. Run after every edit of events.yaml:

    python scripts/build_event_bank.py            # build
    python scripts/build_event_bank.py --tune     # also print matching accuracy / threshold figures
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Prompts that name no event: the matcher must reject them (they tune the threshold).
FAR_PROMPTS = [
    "what is the capital of france", "buy milk and eggs", "tell me a joke", "hello",
    "spawn a dragon", "destroy all bricks", "paint the bricks red", "a bigger paddle", "play some music", "how do I save the game", "make the bricks purple",
    "add more enemies", "I love pizza", "the stock market crashed", "open the door",
    "asdfghjkl", "42", "print the score", "invert the colours", "zoom in", "give me a sword",
]


def build(out: Path, yaml_path: Path | None, model_path: str | None) -> None:
    from safetensors.numpy import save_file

    from engine.events import EVENTS_YAML, load_catalog
    from models.text import TextEncoder, bank_key, default_model_path

    cat = load_catalog(yaml_path or EVENTS_YAML)
    enc = TextEncoder(model_path)
    tensors: dict[str, np.ndarray] = {}
    prompts: dict[str, dict[str, list[str]]] = {"train": {}, "heldout": {}, "end": {}}
    for spec in cat.events.values():
        for split, texts in (("train", spec.train), ("heldout", spec.heldout), ("end", spec.end)):
            if texts:
                tensors[bank_key(split, spec.name)] = enc.encode(list(texts))
                prompts[split][spec.name] = list(texts)
    tensors["end_all/train"] = enc.encode(list(cat.end_all_train))
    tensors["end_all/heldout"] = enc.encode(list(cat.end_all_heldout))
    if cat.decoys:
        tensors["decoys/train"] = enc.encode(list(cat.decoys))
    meta = {
        "phrasings_sha256": cat.sha256,
        "encoder": Path(model_path or default_model_path()).name,
        "dim": str(tensors["end_all/train"].shape[1]),
        "prompts": json.dumps(prompts),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, str(tmp), meta)
    os.replace(tmp, out)
    rows = sum(v.shape[0] for v in tensors.values())
    print(f"wrote {out}: {len(cat.events)} events, {rows} phrasings, {out.stat().st_size / 1024:.0f} KiB")


def tune(bank: Path) -> None:
    """Matching figures: held-out paraphrases and end prompts must match, far prompts must not."""
    from engine.events import load_catalog
    from models.text import EventMatcher, TextEncoder

    cat = load_catalog()
    m = EventMatcher(TextEncoder(), bank_path=bank)
    m.threshold = -1.0  # see raw nearest results
    ok, sims = 0, []
    cases: list[tuple[str, str, str | None]] = [(p, "start", s.name) for s in cat.events.values() for p in s.heldout]
    cases += [(p, "end_all", None) for p in cat.end_all_heldout]
    for prompt, action, event in cases:
        r = m.match(prompt)
        good = (r.action, r.event) == (action, event)
        ok += good
        sims.append(r.similarity)
        if not good:
            print(f"  MISS {prompt!r}: {r.action} {r.event} {r.similarity:.2f}")
    print(f"held-out: {ok}/{len(cases)} nearest correct; similarity min {min(sims):.2f} "
          f"p10 {np.percentile(sims, 10):.2f} median {np.median(sims):.2f}")
    for th in sorted({0.45, 0.48, cat.match_threshold}):
        m.threshold = th
        acc = sum(m.match(p).action == a for p, a, _ in cases)
        rej = [r.prompt for r in (m.match(p) for p in FAR_PROMPTS) if r.action != "unknown"]
        print(f"threshold {th:.2f}: held-out acted on {acc}/{len(cases)}, "
              f"unrelated refused {len(FAR_PROMPTS) - len(rej)}/{len(FAR_PROMPTS)} {rej or ''}")
    for prompt, s in zip([c[0] for c in cases], sims):
        if s < cat.match_threshold:
            print(f"  below threshold: {prompt!r} {s:.2f}")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from engine.errors import ArgumentParser  # a mistyped flag: one error line, exit 2
    from models.text import EVENT_BANK
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=EVENT_BANK, help="bank file to write")
    ap.add_argument("--events", type=Path, default=None, help="events yaml (default assets/events.yaml)")
    ap.add_argument("--encoder", default=None, help="sentence-transformers model dir (default: the package's)")
    ap.add_argument("--tune", action="store_true", help="print matching accuracy and threshold figures")
    args = ap.parse_args(argv)
    build(args.out, args.events, args.encoder)
    if args.tune:
        tune(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

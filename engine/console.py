"""The world-event console: a one-line prompt at the bottom of the window ("make it rain").

The frame loop owns pygame; it hands every KEYDOWN / TEXTINPUT / KEYUP to `handle_key` (True:
consumed, the game must not see it), reads `active` before each step, shows `hud_lines()` and
calls `draw(surface)`. Everything slow runs on one worker thread: loading the text encoder (started
at construction, so the first prompt does not wait for it) and matching each prompt. The loop only
edits a short string and drains a queue, so nothing typed can stall or crash it.

Keys: ` or T opens it (the world keeps running), Enter submits, Backspace deletes (Ctrl: a word),
Up/Down walk the history, Ctrl+V pastes, Esc closes.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from typing import Any

from engine.simulator import GameSpec, WorldEvent
from models.text import clean_prompt  # light: torch and the encoder load on the worker thread

MAX_PROMPT_CHARS = 200
LOG_LINES = 4
NOTICE_SECONDS = 6.0
CONDITIONING = ("nearest", "prompt")


class Console:
    """Prompt -> world events for the simulator being played.

    Args:
        spec: the game (events that do not apply to it are refused with a message).
        sim: the simulator; `getattr(sim, "events_supported", True)` False (a world model trained
            without events) makes the console say so instead of pretending.
        encoder: a models.text.TextEncoder to use (default: the offline all-MiniLM-L6-v2).
        start_worker: False builds no matcher (tests of the widget alone).
        conditioning: what a started event carries as its embedding for a world model:
            "nearest" the training paraphrase nearest to the prompt (the default: an unseen
            wording then acts as strongly as the trained one it resembles), "prompt" the
            prompt's own embedding (to measure how the model itself generalises).
    """

    def __init__(self, spec: GameSpec | None = None, sim: Any = None, *, encoder: Any = None,
                 events_supported: bool | None = None, start_worker: bool = True,
                 font_size: int = 18, conditioning: str = "nearest") -> None:
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning must be one of {CONDITIONING}, not {conditioning!r}")
        self.conditioning = conditioning
        self.spec = spec if spec is not None else getattr(sim, "spec", None)
        self.game = self.spec.name if self.spec is not None else None
        if events_supported is None:
            events_supported = bool(getattr(sim, "events_supported", True))
        self.events_supported = events_supported
        known = getattr(sim, "event_names", None)  # a world model renders only what it was trained on
        self._known: set[str] | None = set(known) if known is not None else None
        self.is_open = False
        self.text = ""
        self.history: list[str] = []
        self._hist_pos: int | None = None
        self._swallow: str | None = None  # the TEXTINPUT of the key that opened the console
        self._active: dict[str, WorldEvent] = {}
        self._log: deque[str] = deque(maxlen=LOG_LINES)
        self._notice = ""
        self._notice_until = 0.0
        self._pending = 0
        self._matcher_ready = False
        self._disabled_reason: str | None = None
        self._font_size = font_size
        self._font: Any = None
        self._render_cache: dict[tuple[str, tuple[int, int, int]], Any] = {}
        self._jobs: queue.Queue[str | None] = queue.Queue(maxsize=16)
        self._results: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._encoder = encoder
        self._worker: threading.Thread | None = None
        if not events_supported:
            self._disabled_reason = "this model was trained without world events; prompts change nothing"
        elif start_worker:
            self._worker = threading.Thread(target=self._work, name="event-console", daemon=True)
            self._worker.start()

    # --- what the loop reads ---------------------------------------------------------------
    @property
    def active(self) -> tuple[WorldEvent, ...]:
        """The active events, in onset order, each with its prompt, similarity and embedding."""
        self._drain()
        return tuple(self._active.values())

    @property
    def ready(self) -> bool:
        """The matcher is loaded (prompts are answered at once)."""
        self._drain()
        return self._matcher_ready

    def hud_lines(self) -> list[str]:
        """One line per active event: what it was understood as, from which prompt, how sure."""
        self._drain()
        lines = [f"{e.name} <- \"{_short(e.prompt, 40)}\" ({e.similarity:.2f})" for e in self._active.values()]
        if self._disabled_reason and not self.is_open and time.monotonic() < self._notice_until:
            lines.append(f"events: {self._disabled_reason}")
        return lines

    def close(self) -> None:
        """Stop the worker thread (it is a daemon; this only makes shutdown prompt)."""
        if self._worker is not None:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                pass

    # --- input -----------------------------------------------------------------------------
    def handle_key(self, event: Any) -> bool:
        """Feed one pygame event; True when the console consumed it."""
        import pygame

        try:
            if event.type == pygame.TEXTINPUT:
                if self._swallow is not None and event.text == self._swallow:
                    self._swallow = None
                    return True
                self._swallow = None
                if not self.is_open:
                    return False
                self._insert(event.text)
                return True
            if event.type != pygame.KEYDOWN:
                return False
            self._swallow = None
            mods = getattr(event, "mod", 0)
            ctrl = bool(mods & (pygame.KMOD_CTRL | pygame.KMOD_META))
            if not self.is_open:
                if event.key in (pygame.K_BACKQUOTE, pygame.K_t) and not ctrl and not mods & pygame.KMOD_ALT:
                    self.open()
                    self._swallow = "`" if event.key == pygame.K_BACKQUOTE else getattr(event, "unicode", "t") or "t"
                    return True
                return False
            self._key(event.key, ctrl)
            return True
        except Exception as err:  # noqa: BLE001 - nothing typed may crash the frame loop
            self._say(f"console error: {type(err).__name__}")
            return True

    def open(self) -> None:
        self.is_open = True
        self._hist_pos = None
        if self._disabled_reason:
            self._say(self._disabled_reason)

    def _key(self, key: int, ctrl: bool) -> None:
        import pygame

        if key == pygame.K_ESCAPE:
            self.is_open = False
        elif key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            self.submit(self.text)
            self.text = ""
        elif key == pygame.K_BACKSPACE:
            if ctrl:  # delete the last word
                kept = self.text.rstrip()
                self.text = kept[: kept.rfind(" ") + 1]
            else:
                self.text = self.text[:-1]
        elif key == pygame.K_UP and self.history:
            self._hist_pos = len(self.history) - 1 if self._hist_pos is None else max(0, self._hist_pos - 1)
            self.text = self.history[self._hist_pos]
        elif key == pygame.K_DOWN and self._hist_pos is not None:
            self._hist_pos += 1
            if self._hist_pos >= len(self.history):
                self._hist_pos, self.text = None, ""
            else:
                self.text = self.history[self._hist_pos]
        elif key == pygame.K_v and ctrl:
            self._insert(_clipboard_text())

    def _insert(self, text: str) -> None:
        """Append typed or pasted text: control characters and newlines become spaces; the line
        stops at MAX_PROMPT_CHARS (a notice says so; only that many characters are ever looked at)."""
        room = MAX_PROMPT_CHARS - len(self.text)
        if room <= 0:
            self._say(f"prompt truncated to {MAX_PROMPT_CHARS} characters")
            return
        clean = "".join(c if c.isprintable() else " " for c in text[: room + 1])
        if len(clean) > room:
            self._say(f"prompt truncated to {MAX_PROMPT_CHARS} characters")
        self.text += clean[:room]

    def submit(self, prompt: str) -> None:
        """Send a prompt to be understood (also what Enter does); empty prompts are ignored."""
        text, cut = clean_prompt(prompt, MAX_PROMPT_CHARS)
        if not text:
            return
        if cut:
            self._say(f"prompt truncated to {MAX_PROMPT_CHARS} characters")
        if not self.history or self.history[-1] != text:
            self.history.append(text)
        self._hist_pos = None
        self._log.append(f"> {text}")
        if self._disabled_reason:
            self._say(self._disabled_reason)
            return
        try:
            self._jobs.put_nowait(text)
            self._pending += 1
            if not self._matcher_ready:
                self._say("loading the text encoder...")
        except queue.Full:
            self._say("busy: prompt dropped, try again")

    # --- worker thread ---------------------------------------------------------------------
    def _work(self) -> None:
        try:
            from models.text import EventMatcher, TextEncoder

            encoder = self._encoder or TextEncoder()
            matcher = EventMatcher(encoder, game=self.game)
            self._results.put(("ready", None))
        except Exception as err:  # noqa: BLE001 - report the reason in one line, play goes on
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._results.put(("disabled", msg))
            return
        while True:
            text = self._jobs.get()
            if text is None:
                return
            try:
                self._results.put(("match", matcher.match(text)))
            except Exception as err:  # noqa: BLE001
                self._results.put(("error", f"could not understand the prompt: {type(err).__name__}"))

    def _drain(self) -> None:
        """Apply the worker's answers (runs on the loop's thread, never blocks)."""
        while True:
            try:
                kind, value = self._results.get_nowait()
            except queue.Empty:
                return
            if kind == "ready":
                self._matcher_ready = True
            elif kind == "disabled":
                self._disabled_reason = f"world events disabled: {value}"
                print(f"warning: {self._disabled_reason}", file=sys.stderr)
                self._say(self._disabled_reason)
            elif kind == "error":
                self._pending = max(0, self._pending - 1)
                self._say(value)
            else:
                self._pending = max(0, self._pending - 1)
                self._apply(value)

    def _apply(self, r: Any) -> None:
        if r.action == "start" and self._known is not None and r.event not in self._known:
            self._say(f"understood as {r.event} ({r.similarity:.2f}), but this model was not trained with it")
        elif r.action == "start":
            again = r.event in self._active
            self._active.pop(r.event, None)  # a restart moves it to the end, with the new prompt
            use_anchor = self.conditioning == "nearest" and r.anchor is not None
            emb = r.anchor if use_anchor else r.embedding
            self._active[r.event] = WorldEvent(r.event, r.prompt, float(r.similarity), emb)
            self._say(f"{r.event} {'restarted' if again else 'started'} ({r.similarity:.2f})")
        elif r.action == "end":
            if self._active.pop(r.event, None) is not None:
                self._say(f"{r.event} ended ({r.similarity:.2f})")
            else:
                self._say(f"{r.event} is not active")
        elif r.action == "end_all":
            self._active.clear()
            self._say(f"all events cleared ({r.similarity:.2f})")
        else:
            self._say(r.describe())

    def _say(self, line: str) -> None:
        self._log.append(line)
        self._notice = line
        self._notice_until = time.monotonic() + NOTICE_SECONDS

    # --- drawing ---------------------------------------------------------------------------
    def draw(self, surface: Any) -> None:
        """Draw the console at the bottom of `surface` (only while open)."""
        self._drain()
        if not self.is_open:
            return
        import pygame

        if self._font is None:
            if not pygame.font.get_init():
                pygame.font.init()
            self._font = pygame.font.Font(None, self._font_size)
        line_h = self._font.get_linesize() + 2
        w, h = surface.get_size()
        rows = list(self._log) + [None]
        panel_h = line_h * len(rows) + 8
        panel = pygame.Surface((w, panel_h), pygame.SRCALPHA)
        panel.fill((10, 10, 20, 200))
        surface.blit(panel, (0, h - panel_h))
        y = h - panel_h + 4
        for line in rows:
            if line is None:
                cursor = "_" if int(time.monotonic() * 2) % 2 == 0 else " "
                text, color = "> " + _fit(self.text, w // max(1, self._font_size // 2)) + cursor, (255, 255, 255)
            else:
                text, color = line, (170, 200, 255) if line.startswith(">") else (200, 200, 200)
            surface.blit(self._render(text, color), (6, y))
            y += line_h

    def _render(self, text: str, color: tuple[int, int, int]) -> Any:
        key = (text, color)
        surf = self._render_cache.get(key)
        if surf is None:
            if len(self._render_cache) > 64:
                self._render_cache.clear()
            try:
                surf = self._font.render(text, True, color)
            except Exception:  # noqa: BLE001 - glyphs the font cannot draw (some emoji)
                surf = self._font.render(text.encode("ascii", "replace").decode(), True, color)
            self._render_cache[key] = surf
        return surf


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _fit(text: str, max_chars: int) -> str:
    """The end of the line being typed, so the cursor stays visible."""
    return text if len(text) <= max_chars else "…" + text[-(max_chars - 1):]


def _clipboard_text() -> str:
    """The clipboard's text, or "" where pygame cannot read it (headless, no scrap support)."""
    try:
        import pygame

        if hasattr(pygame.scrap, "get_text"):
            return str(pygame.scrap.get_text() or "")
    except Exception:  # noqa: BLE001
        pass
    return ""

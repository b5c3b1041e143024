"""Game registry: names come from ale-py, lookups forgive spelling, errors name close matches."""

import pytest

from engine.errors import UserError
from engine.games import ALE_AUDIO_RATE, find_game, list_games, make_simulator


def test_list_games_comes_from_ale_roms() -> None:
    from ale_py import roms

    games = list_games()
    assert games[-1] == "carracing"
    assert {"breakout", "pong", "mspacman", "boxing", "freeway", "spaceinvaders"} <= set(games)
    # Everything ale-py ships, minus the multiplayer-only ROMs the single-agent ALE refuses.
    assert len(games) - 1 >= len(roms.get_all_rom_ids()) - 4
    assert games == sorted(games[:-1]) + ["carracing"]


def test_find_game_spelling_and_spec() -> None:
    spec = find_game("Ms_Pacman")
    assert spec == find_game("ms-pacman") == find_game("MSPACMAN")
    assert spec.env_id == "ALE/MsPacman-v5"
    assert spec.family == "atari"
    assert spec.action_meanings[0] == "NOOP"
    assert spec.steps_per_second == 15.0
    assert spec.audio_rate == ALE_AUDIO_RATE == 30720
    assert find_game("breakout").action_meanings == ("NOOP", "FIRE", "RIGHT", "LEFT")
    assert find_game("breakout", frameskip=2).steps_per_second == 30.0
    assert find_game("mspacman", full_action_space=True).num_actions == 18


def test_carracing_spec() -> None:
    spec = find_game("CarRacing")
    assert spec.env_id == "CarRacing-v3"
    assert spec.family == "carracing"
    assert spec.num_actions > 5
    assert "GAS+LEFT" in spec.action_meanings and "BRAKE+RIGHT" in spec.action_meanings
    assert spec.steps_per_second == 25.0
    assert find_game("carracing", action_repeat=5).steps_per_second == 10.0


def test_unknown_game_names_close_matches() -> None:
    with pytest.raises(UserError, match=r"unknown game 'brekout'; did you mean breakout"):
        find_game("brekout")
    with pytest.raises(UserError) as e:
        find_game("mspacmn")
    assert "mspacman" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="unknown game 'zzzzqqq'"):
        find_game("zzzzqqq")


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="frameskip"):
        find_game("pong", frameskip=0)
    with pytest.raises(UserError, match="sticky"):
        make_simulator("pong", sticky=1.5)

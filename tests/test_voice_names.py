"""Recorded TTS voice names: ``<engine>:<voice>``, bare names are espeak-ng's (s2i/data/voices.py)."""

import pytest

from s2i.data.voices import engine_of, qualified_voice, split_voice


def test_bare_names_are_espeak_and_qualified_names_carry_their_engine():
    assert split_voice("en-us+f3") == ("espeak-ng", "en-us+f3")
    assert split_voice("flite:awb") == ("flite", "awb")
    assert engine_of("festival:kal_diphone") == "festival"
    assert engine_of("en-gb-x-rp") == "espeak-ng"


def test_qualified_voice_round_trips_and_keeps_espeak_bare():
    assert qualified_voice("espeak-ng", "en-us") == "en-us"
    for engine, name in [("flite", "slt"), ("festival", "cmu_us_slt_arctic_hts")]:
        assert split_voice(qualified_voice(engine, name)) == (engine, name)


@pytest.mark.parametrize("bad", [":awb", "flite:", ":"])
def test_empty_engine_or_voice_is_an_error_naming_the_format(bad):
    with pytest.raises(ValueError, match="<engine>:<voice>"):
        split_voice(bad)


def test_engine_names_cannot_hold_the_separator():
    with pytest.raises(ValueError):
        qualified_voice("a:b", "c")

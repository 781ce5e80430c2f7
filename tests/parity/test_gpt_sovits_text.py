"""The GPT-SoVITS v2 English front end: against upstream's ``clean_text`` where we mean to agree,
and on the places we differ on purpose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamvox.engine.backends.gpt_sovits.text import (
    V2_ENGLISH_IDS,
    V2_SYMBOL_COUNT,
    english_phoneme_ids,
    english_phones,
    normalize_english,
)
from streamvox.engine.text.english_g2p import EnglishG2P, LetterToSound
from streamvox.engine.text.english_numbers import cardinal, expand_numbers, ordinal, year_or_cardinal

from tests.helpers.gsv_runner import reference

pytestmark = pytest.mark.reference

AGREED = [
    "Hello world, this is a test.",
    "I have 42 apples and $3.50!",
    "Supercalifragilistic words like blorptastic and NASA.",
    "The quick brown fox jumps over the lazy dog.",
    "On March 3rd, 1999, about 12,345 people came.",
    "Streaming text-to-speech needs low latency and smooth seams.",
    "Is it 3.14 or 22/7? Nobody knows... Really?!",
    "My iPhone's battery lasts 2 days, about 48 hours.",
    "GPT-SoVITS voices sound natural when the reference audio is clean.",
    "Dr. Smith's cat weighs 5 kilograms, and costs £20.",
    "We bought 1/2 a pizza, then 3/4 of a cake in 2005, and 1905 more in 2019.",
    "Hi!",
    "Zorbleflux and quintessentialistic grumbleweeds perambulated.",
    "Unbelievably, 100% of 7 billion users answered 1,000,000 times.",
]


@pytest.fixture(scope="module")
def g2p() -> EnglishG2P:
    return EnglishG2P()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return reference({"op": "phonemes", "texts": AGREED}, tmp_path_factory.mktemp("phonemes"))


def test_symbol_ids_are_v2s(upstream: dict[str, np.ndarray]) -> None:
    symbols = list(upstream["symbols"])
    assert len(symbols) == V2_SYMBOL_COUNT
    for symbol, index in V2_ENGLISH_IDS.items():
        assert symbols[index] == symbol


@pytest.mark.parametrize("index", range(len(AGREED)))
def test_phoneme_ids_equal_upstream(index: int, g2p: EnglishG2P, upstream: dict[str, np.ndarray]) -> None:
    expected = [int(i) for i in upstream["ids"][index] if i >= 0]
    assert english_phoneme_ids(AGREED[index], g2p) == expected


def test_deliberate_differences(g2p: EnglishG2P) -> None:
    # Upstream drops ';' and ':' (its mapping never matches); here they are pauses.
    assert normalize_english("came; it was") == "came, it was"
    # Upstream reads "4:30" as "four thirty a.m." whatever the hour.
    assert normalize_english("at 4:30 or 16:05 or 7:00") == "at four thirty or four oh five or seven o'clock"
    # Curly apostrophes read like straight ones.
    assert english_phones("Don’t", g2p) == english_phones("Don't", g2p)


def test_short_utterances_start_with_a_comma(g2p: EnglishG2P) -> None:
    assert english_phones("Hi", g2p) == [",", "HH", "AY1"]


def test_numbers() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(115) == "one hundred fifteen"
    assert cardinal(12_345) == "twelve thousand, three hundred forty-five"
    assert cardinal(7_000_000_001) == "seven billion, one"
    assert ordinal(1) == "first" and ordinal(22) == "twenty-second" and ordinal(40) == "fortieth"
    assert ordinal(100) == "one hundredth" and ordinal(12) == "twelfth"
    assert year_or_cardinal(1999) == "nineteen ninety-nine"
    assert year_or_cardinal(1905) == "nineteen oh five"
    assert year_or_cardinal(2000) == "two thousand" and year_or_cardinal(2007) == "two thousand seven"
    assert year_or_cardinal(1800) == "eighteen hundred" and year_or_cardinal(3000) == "three thousand"
    assert expand_numbers("$1.01 and £2") == "one dollar and one cent and two pounds"
    assert expand_numbers("-5 degrees") == "negative five degrees"


def test_homographs_follow_the_word_before(g2p: EnglishG2P) -> None:
    assert g2p.pronounce("record", "to") != g2p.pronounce("record", "the")
    assert g2p.pronounce("read", "will") == ["R", "IY1", "D"]


def test_unknown_words_go_through_the_letter_model(g2p: EnglishG2P) -> None:
    phones = g2p.letter_to_sound("zorbleflux")
    assert phones and set(phones) <= set(LetterToSound.PHONES[4:])
    assert phones[0] == "Z"


def test_loading_downloads_nothing_and_never_imports_nltk() -> None:
    code = (
        "import sys, socket\n"
        "socket.socket = None\n"
        "from streamvox.engine.backends.gpt_sovits.text import english_phoneme_ids\n"
        "assert english_phoneme_ids('Hello there, zorbleflux.')\n"
        "assert 'nltk' not in sys.modules and 'g2p_en' not in sys.modules, sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-2000:]

"""espeak-ng phonemes as Piper voices expect them, checked against piper-tts's own phonemizer."""

from __future__ import annotations

import pytest
from piper.phonemize_espeak import EspeakPhonemizer
from streamvox.engine.text.phonemes import _terminator_of, phoneme_ids, phonemize

# piper-tts bundles a patched espeak-ng; these sentences phonemize identically with the stock 1.52
# library we use.  (Known differences: that fork inserts a palatal mark "ʲ" before some vowels.)
SENTENCES = [
    "Hello, world! How are you today? I'm fine: thanks; really.",
    "no punctuation here at all",
    "Wait... what?! Yes-no (maybe).",
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech should start quickly, sound natural, and never click between chunks.",
    "Numbers like 42 and 7 are fine.",
    "She sells sea shells by the sea shore; he doesn't.",
]


@pytest.fixture(scope="module")
def piper_phonemizer() -> EspeakPhonemizer:
    return EspeakPhonemizer()


@pytest.mark.parametrize("text", SENTENCES)
def test_matches_piper_phonemizer(text: str, piper_phonemizer: EspeakPhonemizer) -> None:
    assert phonemize(text, "en-us") == piper_phonemizer.phonemize("en-us", text)


def test_clause_punctuation_is_kept_like_piper() -> None:
    (sentence,) = phonemize("Well, then; go.", "en-us")
    joined = "".join(sentence)
    assert ", " in joined and "; " in joined and joined.endswith(".")


def test_sentences_are_split() -> None:
    assert len(phonemize("One. Two! Three?", "en-us")) == 3


@pytest.mark.parametrize(
    ("consumed", "at_end", "expected"),
    [
        ("Hello, w", False, (",", False)),
        ("world! H", False, ("!", True)),
        ("really.", True, (".", True)),
        ("no stop", True, ("", True)),
        ("Wait... w", False, ("", False)),
        ("what?! Y", False, ("?", True)),
        ('said "hi." T', False, (".", True)),
    ],
)
def test_terminator_recovery(consumed: str, at_end: bool, expected: tuple[str, bool]) -> None:
    assert _terminator_of(consumed, at_end) == expected


def test_phoneme_ids_wrap_with_bos_pad_eos_and_skip_unknown() -> None:
    id_map = {"^": [1], "_": [0], "$": [2], "a": [14], "b": [15]}
    assert phoneme_ids(["a", "?", "b"], id_map) == [1, 0, 14, 0, 15, 0, 2]

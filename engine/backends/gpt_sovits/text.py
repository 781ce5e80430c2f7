"""GPT-SoVITS v2's English text front end: chat text to the v2 phoneme ids.

Steps: strip chat markup (:func:`normalize_for_speech`); write numbers out
(:mod:`english_numbers`); map ``;:`` and CJK punctuation to ``,.!?``; drop
accents and every character but letters, apostrophes and ``.,?!-``; spell
out runs of capitals ("NASA" → "N A S A"); keep one of several punctuation
marks in a row; ARPAbet phones (:mod:`english_g2p`); upstream's clean-up of
the phones (the bare ``UW`` the letter model can emit is dropped; an
apostrophe becomes ``-``; an utterance of fewer than four phones starts
with a comma).  BERT features are zero for English, as upstream has them.

The ids are v2's: its 732 symbols, sorted, with the English ones below.

Where this differs from upstream on purpose: upstream means to turn ``;`` and
``:`` into commas and curly apostrophes into straight ones, but its pattern
matches neither (it escapes a character class), so it drops them; here they
are mapped (a pause at a semicolon; "don’t" read as "don't").  Clock times
are read without the "a.m."/"p.m." upstream guesses from the hour.
"""

from __future__ import annotations

import re
import unicodedata

from streamvox.engine.text.english_g2p import EnglishG2P, shared_english_g2p
from streamvox.engine.text.english_numbers import expand_numbers
from streamvox.engine.text.normalize import normalize_for_speech

V2_ENGLISH_IDS: dict[str, int] = {
    "!": 0, ",": 1, "-": 2, ".": 3, "?": 4,
    "AA0": 6, "AA1": 7, "AA2": 8, "AE0": 9, "AE1": 10, "AE2": 11, "AH0": 12, "AH1": 13, "AH2": 14,
    "AO0": 15, "AO1": 16, "AO2": 17, "AW0": 18, "AW1": 19, "AW2": 20, "AY0": 21, "AY1": 22, "AY2": 23,
    "B": 24, "CH": 25, "D": 26, "DH": 27, "EH0": 34, "EH1": 35, "EH2": 36, "ER": 37, "ER0": 38,
    "ER1": 39, "ER2": 40, "EY0": 41, "EY1": 42, "EY2": 43, "F": 49, "G": 50, "HH": 51, "IH": 53,
    "IH0": 54, "IH1": 55, "IH2": 56, "IY0": 57, "IY1": 58, "IY2": 59, "JH": 60, "K": 61, "L": 62,
    "M": 63, "N": 64, "NG": 65, "OW0": 67, "OW1": 68, "OW2": 69, "OY0": 70, "OY1": 71, "OY2": 72,
    "P": 73, "R": 74, "S": 75, "SH": 76, "SP": 77, "SP2": 78, "SP3": 79, "T": 80, "TH": 81,
    "UH0": 83, "UH1": 84, "UH2": 85, "UNK": 86, "UW0": 87, "UW1": 88, "UW2": 89, "V": 90, "W": 91,
    "Y": 92, "Z": 93, "ZH": 94, "_": 95, "…": 321,
}  # fmt: skip
"""Where GPT-SoVITS v2 puts the symbols English text uses (checked against upstream by a test)."""

V2_SYMBOL_COUNT = 732

_PUNCTUATION_MAP = {"；": ",", ";": ",", "：": ",", ":": ",", "，": ",", "。": ".", "！": "!", "？": "?"}
_PUNCTUATION = "!?…,.-"
_REPEATED_PUNCTUATION = re.compile(rf"([{re.escape(_PUNCTUATION)}\s])([{re.escape(_PUNCTUATION)}])+")
_CAPITAL_INSIDE_WORD = re.compile(r"(?<!^)(?<!\s)([A-Z])")


def normalize_english(text: str) -> str:
    """Chat text to the plain text the phonemiser reads (see the module docstring)."""
    text = normalize_for_speech(text).replace("’", "'")
    text = expand_numbers(text)
    text = "".join(_PUNCTUATION_MAP.get(c, c) for c in text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = re.sub(r"[^ A-Za-z'.,?!-]", "", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    text = _CAPITAL_INSIDE_WORD.sub(r" \1", text)
    return _REPEATED_PUNCTUATION.sub(r"\1", text)


def english_phones(text: str, g2p: EnglishG2P | None = None) -> list[str]:
    """The v2 phone sequence for ``text`` (normalised here)."""
    phones = []
    for phone in (g2p or shared_english_g2p())(normalize_english(text)):
        if phone == "'":
            phones.append("-")
        elif phone in V2_ENGLISH_IDS:
            phones.append(phone)
    if len(phones) < 4:
        phones.insert(0, ",")
    return phones


def english_phoneme_ids(text: str, g2p: EnglishG2P | None = None) -> list[int]:
    """The v2 phoneme ids for ``text``: what the T2S model and SoVITS's text encoder read."""
    return [V2_ENGLISH_IDS[p] for p in english_phones(text, g2p)]

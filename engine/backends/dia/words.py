"""Estimated word timings for Dia: a segment's length shared out by letters.

Dia predicts no durations; what is known exactly is each segment's length
once its generation ends.  Each word gets a share proportional to its letters
and digits, and punctuation after it a pause; speaker tags are not words.
These are estimates (``estimated: true`` on the wire).  Pure functions: thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamvox.engine.text.words import SpokenWord, core_of, spoken_words

_PAUSE_LETTERS = {",": 2.0, ";": 2.0, ":": 2.0, ".": 4.0, "!": 4.0, "?": 4.0, "…": 4.0}


def speaker_free_words(raw: str) -> list[SpokenWord]:
    """The spoken words of ``raw``, its ``[S1]``/``[S2]`` tags left out."""
    return [w for w in spoken_words(raw)[1] if core_of(w.text) not in ("S1", "S2")]


def word_weights(words: Sequence[SpokenWord]) -> tuple[list[float], list[float]]:
    """Each word's letter count and the pause (in letters) its trailing punctuation makes."""
    weights, pauses = [], []
    for word in words:
        weights.append(float(max(1, sum(c.isalnum() for c in word.text))))
        trailing = word.text.rstrip("\"')]}»”’*_~")
        pauses.append(_PAUSE_LETTERS.get(trailing[-1:], 0.0))
    return weights, pauses

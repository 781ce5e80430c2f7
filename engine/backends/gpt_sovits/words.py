"""Estimated word timings for GPT-SoVITS: a segment's length shared out by phone count.

The T2S model is autoregressive and predicts no durations; its attention
over the phoneme positions is spread across heads and layers and, in the
fused decode step, never materialised.  What is known exactly is each
segment's length once its generation ends, and each word's phones; speech
rate within one sentence is roughly constant per phone, so each word gets a
share of the segment proportional to its phones, and a comma or a full stop
after it a pause of two or three phones.  These are estimates (documented as
such, ``estimated: true`` on the wire).  Pure functions: thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamvox.engine.backends.gpt_sovits.text import english_phones
from streamvox.engine.text.words import SpokenWord

_PUNCTUATION = frozenset("!?…,.-")
_PAUSE_PHONES = {",": 2.0, ";": 2.0, ":": 2.0, ".": 3.0, "!": 3.0, "?": 3.0, "…": 3.0}


def word_weights(words: Sequence[SpokenWord]) -> tuple[list[float], list[float]]:
    """Each word's phone count and the pause (in phones) its trailing punctuation makes."""
    weights, pauses = [], []
    for word in words:
        phones = [p for p in english_phones(word.text) if p not in _PUNCTUATION]
        weights.append(float(max(1, len(phones))))
        trailing = word.text.rstrip("\"')]}»”’*_~")
        pauses.append(_PAUSE_PHONES.get(trailing[-1:], 0.0))
    return weights, pauses

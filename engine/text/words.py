"""A segment's spoken words, each tied back to the characters the client sent.

Backends phonemise the *normalised* text (Markdown stripped, URLs shortened
to their host, emoji dropped), but timestamps and barge-in accounting must
point into the client's own text.  :func:`spoken_words` finds each
normalised word in the raw text, in order, and widens it to the raw token it
came from (a URL's host stands for the whole URL), so every offset a client
sees is one of its own characters.  :func:`proportional_timings` spreads a
known duration over the words by weight, for models that have no durations.
Pure functions: safe from any thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from streamvox.engine.events import WordTiming
from streamvox.engine.text.normalize import normalize_for_speech

_LEADING = "\"'([{«“‘*_~¿¡"
_TRAILING = ".,;:!?…\"')]}»”’*_~"
_TOKEN = re.compile(r"\S+")
_STOPS = "[]()<>|"
"""Markup that ends a word's raw token even without a space (``[link](url)``, ``a|b``)."""


@dataclass(frozen=True)
class SpokenWord:
    """One word of the normalised text and the characters of the raw text it stands for."""

    text: str
    """The word as the phonemiser reads it (punctuation included)."""
    char_start: int
    char_end: int
    """Offsets in the raw text, ``char_end`` exclusive; equal when the word was not found."""

    @property
    def located(self) -> bool:
        return self.char_end > self.char_start


def core_of(word: str) -> str:
    """``word`` without the quotes, brackets, emphasis and clause punctuation around it."""
    return word.lstrip(_LEADING).rstrip(_TRAILING)


def spoken_words(raw: str) -> tuple[str, list[SpokenWord]]:
    """The normalised text of ``raw`` and its words (those with a letter or digit), in order."""
    normalized = normalize_for_speech(raw)
    found: list[tuple[str, int, int]] = []
    cursor = 0
    for match in _TOKEN.finditer(normalized):
        word = match.group()
        core = core_of(word)
        if not any(c.isalnum() for c in core):
            continue
        at = raw.find(core, cursor)
        if at < 0:
            found.append((word, cursor, cursor))
            continue
        found.append((word, at, at + len(core)))
        cursor = at + len(core)
    words = []
    for i, (word, start, end) in enumerate(found):
        if start == end:
            words.append(SpokenWord(word, start, end))
            continue
        previous_end = words[-1].char_end if words else 0
        next_start = next((s for _, s, e in found[i + 1 :] if e > s), len(raw))
        token_start, token_end = _token_around(raw, start, end)
        wide_start = max(token_start, previous_end)
        wide_end = min(token_end, next_start)
        while wide_start < start and raw[wide_start] in _LEADING:
            wide_start += 1
        while wide_end > end and raw[wide_end - 1] in _TRAILING:
            wide_end -= 1
        words.append(SpokenWord(word, wide_start, wide_end))
    return normalized, words


def _token_around(raw: str, start: int, end: int) -> tuple[int, int]:
    """The token of ``raw`` holding ``[start, end)``: up to whitespace or markup either side."""
    left = start
    while left > 0 and not raw[left - 1].isspace() and raw[left - 1] not in _STOPS:
        left -= 1
    right = end
    while right < len(raw) and not raw[right].isspace() and raw[right] not in _STOPS:
        right += 1
    return left, right


def proportional_timings(
    words: Sequence[SpokenWord], weights: Sequence[float], pauses: Sequence[float], samples: int
) -> list[WordTiming]:
    """Spread ``samples`` over ``words`` in proportion to ``weights`` (an estimate).

    ``pauses[i]`` is the weight of the silence after word ``i`` (a comma, a full stop),
    time that belongs to no word.  Words that were not located keep their share of time
    but get no timing."""
    if not len(words) == len(weights) == len(pauses):
        raise ValueError(f"{len(words)} words, {len(weights)} weights and {len(pauses)} pauses")
    total = float(sum(weights) + sum(pauses))
    timings: list[WordTiming] = []
    if total <= 0 or samples <= 0:
        return timings
    scale = samples / total
    at = 0.0
    for word, weight, pause in zip(words, weights, pauses, strict=True):
        end = at + weight * scale
        if word.located:
            timings.append(WordTiming(word.char_start, word.char_end, round(at), round(end)))
        at = end + pause * scale
    return timings

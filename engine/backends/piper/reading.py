"""What a Piper voice reads for one segment: its lead, its own text and its preview, as one utterance.

A segment cut mid-sentence comes with the words around it (see
:class:`~streamvox.engine.api.Segment`).  The encoder reads them all, so the
segment's words get the durations and pitch they have in the sentence, and only
the frames of the segment's own words are decoded: from the first frame of its
first word to the first frame of the preview's first word.  The frames come
from the encoder's own durations, word by word (see ``words.py``); where the
words cannot be told apart in order (espeak reorders "$3.50"), the reading falls
back to the segment's text alone.  Pure functions: thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from streamvox.engine.backends.piper.voice import PiperVoice
from streamvox.engine.backends.piper.words import frame_edges, id_words
from streamvox.engine.events import WordTiming
from streamvox.engine.text.words import SpokenWord, spoken_words


@dataclass(frozen=True)
class Reading:
    """One segment's utterance as the voice reads it."""

    phonemes: list[str]
    ids: list[int]
    sources: list[int]
    """Per id, the phoneme it came from (-1 for BOS, PAD and EOS)."""
    words: list[SpokenWord]
    """The words of the whole reading, offsets into ``raw``."""
    raw: str
    """Lead, text and preview joined by spaces."""
    text_offset: int
    """Where the segment's own text starts in ``raw``."""
    first_word: int
    """Index in ``words`` of the segment's first word."""
    end_word: int
    """Index in ``words`` of the preview's first word (``len(words)`` without a preview)."""

    @property
    def in_context(self) -> bool:
        """The reading holds words the segment does not speak."""
        return self.first_word > 0 or self.end_word < len(self.words)


def read(voice: PiperVoice, text: str, lead: str = "", preview: str = "") -> Reading:
    """``voice``'s reading of ``text`` between ``lead`` and ``preview`` (either may be empty)."""
    raw = " ".join(part for part in (lead, text, preview) if part)
    text_offset = len(lead) + 1 if lead else 0
    normalized, words = spoken_words(raw)
    phonemes = voice.phonemes(normalized)
    ids, sources = voice.ids_with_sources(phonemes)
    text_end = text_offset + len(text)
    first_word = sum(1 for w in words if w.char_start < text_offset)
    end_word = first_word + sum(1 for w in words[first_word:] if w.char_start < text_end)
    return Reading(phonemes, ids, sources, words, raw, text_offset, first_word, end_word)


def spoken_frames(reading: Reading, labels: Sequence[int], durations: np.ndarray) -> tuple[int, int] | None:
    """The frames ``[start, end)`` of the segment's own words, or ``None`` if they cannot be cut
    out cleanly: a lead or preview word's sound falls among them, or they have no frames.

    ``labels`` gives each phoneme's word (:func:`~streamvox.engine.backends.piper.words.phoneme_words`)."""
    edges = frame_edges(durations)
    owners = id_words(labels, reading.sources)
    own = [i for i, w in enumerate(owners) if reading.first_word <= w < reading.end_word]
    if not own:
        return None
    lo, hi = own[0], own[-1]
    if any(0 <= w < reading.first_word for w in owners[lo:]):
        return None
    if any(w >= reading.end_word for w in owners[: hi + 1]):
        return None
    after = [i for i, w in enumerate(owners) if w >= reading.end_word]
    start = int(edges[lo]) if reading.first_word > 0 else 0
    end = int(edges[after[0]]) if after else int(edges[-1])
    return (start, end) if end > start else None


def own_timings(reading: Reading, timings: Sequence[WordTiming], start_sample: int) -> list[WordTiming]:
    """The timings of the segment's own words, moved into its text and its audio (which starts at
    ``start_sample`` of the reading's)."""
    words = reading.words[reading.first_word : reading.end_word]
    own = {(w.char_start, w.char_end) for w in words}
    shift = reading.text_offset
    return [
        WordTiming(t.char_start - shift, t.char_end - shift, t.start_sample - start_sample, t.end_sample - start_sample)
        for t in timings
        if (t.char_start, t.char_end) in own
    ]

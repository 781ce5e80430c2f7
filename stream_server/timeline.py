"""Where each word of a context sounds, and what the listener heard before a barge-in.

The engine reports word timings per segment (offsets in the segment's text,
samples from the segment's start); a :class:`Timeline` lifts them into the
context's coordinates (offsets in the whole text the client sent, seconds
of the context's audio) and answers the barge-in question: at a playback
position, which character was being spoken and which words had been heard.
:func:`char_alignment` expands word timings to one entry per character, the
shape ElevenLabs-style clients expect.  Event-loop only (one per context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streamvox.engine.events import WordTiming


@dataclass(frozen=True)
class TimedWord:
    """One word in context coordinates."""

    char_start: int
    char_end: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Heard:
    """What the listener heard by ``played_s``: text up to ``char_offset`` and ``words``
    (each begun before that moment)."""

    played_s: float
    char_offset: int
    words: tuple[TimedWord, ...]


@dataclass(frozen=True)
class CharAlignment:
    """One entry per character of ``text`` (which starts at ``char_start`` of the context)."""

    char_start: int
    text: str
    start_ms: tuple[float, ...]
    duration_ms: tuple[float, ...]


@dataclass
class Timeline:
    """A context's word timings in order of the audio.  Event-loop only."""

    words: list[TimedWord] = field(default_factory=list)
    estimated: bool = False
    """Some segment's timings were estimates rather than model durations."""

    def add(
        self, span_start: int, segment_start_s: float, timings: Sequence[WordTiming], rate: int, estimated: bool
    ) -> list[TimedWord]:
        """Add one segment's timings (``rate``: the model's sample rate); return them lifted."""
        lifted = [
            TimedWord(
                span_start + t.char_start,
                span_start + t.char_end,
                segment_start_s + t.start_sample / rate,
                segment_start_s + t.end_sample / rate,
            )
            for t in timings
        ]
        self.words.extend(lifted)
        self.estimated = self.estimated or estimated
        return lifted

    def heard(self, played_s: float) -> Heard:
        """The barge-in account at ``played_s``.

        Inside a word, the offset is interpolated through its characters (so it lands in
        that word); between words it is the end of the last word heard; before the first
        word it is 0."""
        begun = [w for w in self.words if w.start_s <= played_s]
        if not begun:
            return Heard(played_s, 0, ())
        last = begun[-1]
        if played_s >= last.end_s:
            return Heard(played_s, last.char_end, tuple(begun))
        fraction = (played_s - last.start_s) / (last.end_s - last.start_s)
        offset = last.char_start + int(fraction * (last.char_end - last.char_start))
        return Heard(played_s, min(offset, last.char_end - 1), tuple(begun))


def char_alignment(
    text: str, char_start: int, words: Sequence[TimedWord], start_s: float, end_s: float | None = None
) -> CharAlignment:
    """Times for every character of ``text`` (offset ``char_start`` in its context).

    A word's characters share its time evenly; characters between words share the gap;
    those before the first word share the time from ``start_s``, and those after the last
    word the time up to ``end_s`` (zero-length when it is unknown)."""
    starts = [0.0] * len(text)
    durations = [0.0] * len(text)
    cursor_char, cursor_s = 0, start_s
    for word in words:
        a, b = word.char_start - char_start, word.char_end - char_start
        if a < cursor_char or b > len(text):
            continue
        _spread(starts, durations, cursor_char, a, cursor_s, max(cursor_s, word.start_s))
        _spread(starts, durations, a, b, word.start_s, word.end_s)
        cursor_char, cursor_s = b, word.end_s
    tail_end = cursor_s if end_s is None else max(cursor_s, end_s)
    _spread(starts, durations, cursor_char, len(text), cursor_s, tail_end)
    return CharAlignment(
        char_start,
        text,
        tuple(round(s * 1000, 1) for s in starts),
        tuple(round(d * 1000, 1) for d in durations),
    )


def _spread(starts: list[float], durations: list[float], a: int, b: int, t0: float, t1: float) -> None:
    if b <= a:
        return
    step = (t1 - t0) / (b - a)
    for i in range(a, b):
        starts[i] = t0 + (i - a) * step
        durations[i] = step

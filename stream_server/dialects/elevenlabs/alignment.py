"""ElevenLabs' character alignment, cut to fit its audio messages.

ElevenLabs attaches to each audio message the characters spoken in it, their
times restarting at zero in every message, and clients (Pipecat) keep a
clock that each message advances by the end of its last character.  Our
timings are per segment and arrive when the backend knows them, so this
keeps, per context, the characters timed but not yet sent and the client's
clock; each message takes the pending characters with times relative to that
clock, and the clock moves to the last one's end.  The whitespace between two
segments is sent too (as zero-length characters), so words never run
together.  Event-loop only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamvox.stream_server.timeline import CharAlignment


@dataclass
class AlignmentQueue:
    """One context's characters timed but not yet sent, and the client's clock."""

    text_sent_to: int = 0
    """Characters of the context's text already put in the queue (gaps included)."""
    clock_s: float = 0.0
    chars: list[tuple[str, float, float]] = field(default_factory=list)
    """(character, absolute start s, duration s) waiting for a message."""

    def add(self, text: str, aligned: CharAlignment) -> None:
        """Queue a segment's characters (``text``: the context's whole text so far)."""
        start_s = aligned.start_ms[0] / 1000 if aligned.start_ms else self.clock_s
        for char in text[self.text_sent_to : aligned.char_start]:
            self.chars.append((char, start_s, 0.0))
        for char, start, duration in zip(aligned.text, aligned.start_ms, aligned.duration_ms, strict=True):
            self.chars.append((char, start / 1000, duration / 1000))
        self.text_sent_to = aligned.char_start + len(aligned.text)

    def take_absolute(self) -> dict[str, Any] | None:
        """The queued characters with times from the start of the audio (the HTTP
        ``with-timestamps`` shape: ``characters``, ``character_start_times_seconds``,
        ``character_end_times_seconds``), or ``None`` if none wait."""
        if not self.chars:
            return None
        chars, self.chars = self.chars, []
        return {
            "characters": [c for c, _, _ in chars],
            "character_start_times_seconds": [round(s, 3) for _, s, _ in chars],
            "character_end_times_seconds": [round(s + d, 3) for _, s, d in chars],
        }

    def take(self) -> dict[str, Any] | None:
        """The queued characters as ElevenLabs' ``alignment`` object, or ``None`` if none wait."""
        if not self.chars:
            return None
        starts, durations = [], []
        clock = self.clock_s
        for _, start, duration in self.chars:
            start = max(start, clock)
            starts.append(round((start - self.clock_s) * 1000))
            durations.append(round(duration * 1000))
            clock = start + duration
        chars = [c for c, _, _ in self.chars]
        self.clock_s = self.clock_s + (starts[-1] + durations[-1]) / 1000
        self.chars = []
        return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durations}

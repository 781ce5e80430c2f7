"""The backend every autoregressive family shares: prefill, batched steps, vocoder chunks, a segment's end.

A stream's next unit is, in order of preference: a vocoder chunk if enough
tokens wait for one; a model step while its segment generates (every stream
of the voice that could step joins one batched call: continuous batching,
streams join and leave between steps); its segment's last chunk once
generation has ended; the next segment's prefill (when the voice has a free
cache slot); or the end of the stream.  Prefills and steps of one voice share
a lane, so one model call per voice runs at a time; vocoder chunks of
different streams run side by side.  A slot goes back to the pool when its
segment stops generating, fails, or its stream is cancelled.

A family supplies its voice (:class:`ARVoice`: what a segment says, how it
starts, one batched step, how its words are weighed) and a subclass of
:class:`ARBackend` that names its kind and loads it; the scheduling is here.
Engine-thread methods and worker-side units follow ``engine/api.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from streamvox.engine.api import Plan, Segment, StreamInput, StreamSettings, SynthesisParams
from streamvox.engine.ar.slots import SlotPool
from streamvox.engine.ar.threads import use_unit_threads
from streamvox.engine.ar.token_vocoder import StreamingVocoder
from streamvox.engine.audio.stream_output import StreamOutput
from streamvox.engine.events import EngineEvent, SegmentFinished, SegmentStarted, SegmentWords
from streamvox.engine.text.words import SpokenWord, proportional_timings

_UNKNOWN_LENGTH = 1 << 40
"""An AR segment's length is known only at its end; the seam before it uses the full overlap."""

_CHUNK = Plan("chunk")
_FINAL = Plan("final")
_FINISH = Plan("finish")


class ARSegment(Protocol):
    """One text segment being generated: its cache slot (-1 once given back) and its vocoder."""

    index: int
    slot: int
    vocoder: StreamingVocoder

    @property
    def generating(self) -> bool: ...


class ARVoice(Protocol):
    """What the shared backend needs of an autoregressive voice (besides :class:`~streamvox.engine.api.Voice`)."""

    id: str

    @property
    def sample_rate(self) -> int: ...

    @property
    def max_streams(self) -> int:
        """Segments that can generate at once (cache slots)."""
        ...

    def speakable(self, raw: str, notes: dict[str, Any]) -> str | None:
        """The text the model reads for a segment's client text, or ``None`` if nothing in it is
        speakable.  ``notes`` is the stream's own (the speaker a dialogue left off with, say)."""
        ...

    def words_of(self, raw: str) -> list[SpokenWord]:
        """The segment's spoken words, located in its client text (for the estimated timings)."""
        ...

    def word_weights(self, words: Sequence[SpokenWord]) -> tuple[list[float], list[float]]:
        """Each word's share of the segment's time and the pause after it (relative units)."""
        ...

    def start_segment(self, index: int, slot: int, text: str, seed: int, greedy: bool = False) -> ARSegment:
        """Prefill ``slot`` for ``text`` (a model call); ``greedy`` leaves sampling noise out."""
        ...

    def step(self, segments: Sequence[ARSegment]) -> None:
        """One token for each segment in one batched model call; new tokens go to their vocoders."""
        ...

    def release_slot(self, slot: int) -> None:
        """Slot ``slot`` is free for the next segment (engine thread; no unit uses it)."""
        ...


@dataclass(frozen=True)
class _VoiceLane:
    """One voice's model resources: its cache slots and the plans that use its lane."""

    slots: SlotPool
    start: Plan
    step: Plan


@dataclass(eq=False)
class ARStream:
    """One stream's state: the segment being generated or vocoded, and its seams."""

    stream_id: str
    voice: ARVoice
    params: SynthesisParams
    output: StreamOutput
    lane: _VoiceLane
    segment: ARSegment | None = None
    words: list[SpokenWord] | None = None
    """The words of the segment being generated (for its estimated timings)."""
    piece_start: int = 0
    """``smoother.samples_in`` when that segment's audio began."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the voice keeps about this stream between segments (:meth:`ARVoice.speakable`)."""

    def in_progress(self) -> bool:
        return self.segment is not None

    def release_slot(self) -> None:
        """Give the segment's slot back (no unit may be using it)."""
        if self.segment is not None and self.segment.slot >= 0:
            slot, self.segment.slot = self.segment.slot, -1
            self.lane.slots.release(slot)


def segment_seed(params: SynthesisParams, index: int) -> int:
    """The stream's seed spread over its segments (fresh entropy when the stream has none)."""
    if params.seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return (params.seed * 1_000_003 + index) % 2**63


class _ARUnit(ABC):
    """Base: a unit runs its work with torch on one thread (:mod:`~streamvox.engine.ar.threads`);
    after it, members that stopped generating, failed or left free their slots."""

    def __init__(self, members: Sequence[ARStream]) -> None:
        self.members = members

    def run(self) -> list[EngineEvent]:
        use_unit_threads()
        return self.work()

    @abstractmethod
    def work(self) -> list[EngineEvent]:
        """The unit's own work (worker thread)."""

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        for member, member_gone in zip(self.members, gone, strict=True):
            segment = member.segment
            if member_gone or failed or (segment is not None and not segment.generating):
                member.release_slot()


class _Prefill(_ARUnit):
    def __init__(self, state: ARStream, segment: Segment, slot: int) -> None:
        super().__init__((state,))
        self.state = state
        self.segment = segment
        self.slot = slot

    def work(self) -> list[EngineEvent]:
        state = self.state
        index, raw = self.segment.index, self.segment.text
        text = state.voice.speakable(raw, state.notes)
        if text is None:
            return [SegmentFinished(state.stream_id, index)]
        seed = segment_seed(state.params, index)
        state.segment = state.voice.start_segment(index, self.slot, text, seed, greedy=not state.params.noise)
        state.words = state.voice.words_of(raw)
        state.piece_start = state.output.smoother.samples_in
        return [SegmentStarted(state.stream_id, index, state.output.smoother.start_piece(_UNKNOWN_LENGTH))]

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        if self.state.segment is None:
            self.state.lane.slots.release(self.slot)  # nothing to generate, or the prefill failed
        super().settle(gone, failed)


class _Step(_ARUnit):
    def work(self) -> list[EngineEvent]:
        self.members[0].voice.step([m.segment for m in self.members if m.segment is not None])
        return []


class _Chunk(_ARUnit):
    def work(self) -> list[EngineEvent]:
        state = self.members[0]
        assert state.segment is not None
        return state.output.chunk(state.output.smoother.add(state.segment.vocoder.decode()))


class _Final(_ARUnit):
    def work(self) -> list[EngineEvent]:
        state = self.members[0]
        segment = state.segment
        assert segment is not None
        smoother = state.output.smoother
        out = np.concatenate([smoother.add(segment.vocoder.finish()), smoother.end_piece()])
        state.segment = None  # its slot went back when its generation ended
        words = state.words or []
        weights, pauses = state.voice.word_weights(words)
        timings = proportional_timings(words, weights, pauses, smoother.samples_in - state.piece_start)
        return [
            SegmentWords(state.stream_id, segment.index, tuple(timings), estimated=True),
            *state.output.chunk(out),
            SegmentFinished(state.stream_id, segment.index),
        ]


class _Finish(_ARUnit):
    def work(self) -> list[EngineEvent]:
        return self.members[0].output.finish()


class ARBackend:
    """Runs the streams of one autoregressive family; a subclass names its ``kind`` and its
    ``voice_type`` (whose ``load(directory)`` reads a voice)."""

    kind = ""
    voice_type: Any = None

    def __init__(self) -> None:
        self._lanes: dict[ARVoice, _VoiceLane] = {}

    def load(self, source: str | Path, voice_id: str | None = None, threads: int = 0) -> ARVoice:
        voice: ARVoice = self.voice_type.load(Path(source))
        if voice_id is not None:
            voice.id = voice_id
        return voice

    def bundled(self, threads: int = 0) -> None:
        return None  # users bring their own weights

    def free_slots(self, voice: ARVoice) -> int:
        """Cache slots of ``voice`` no stream holds (a snapshot, for tests and metrics)."""
        return self._lane(voice).slots.free

    def _lane(self, voice: ARVoice) -> _VoiceLane:
        lane = self._lanes.get(voice)
        if lane is None:
            key = (self.kind, id(voice))
            slots = SlotPool(voice.max_streams, voice.release_slot)
            lane = _VoiceLane(slots, Plan("start", lane=key), Plan("step", lane=key, group=key))
            self._lanes[voice] = lane
        return lane

    def open_stream(
        self, stream_id: str, voice: ARVoice, params: SynthesisParams, settings: StreamSettings
    ) -> ARStream:
        output = StreamOutput(stream_id, voice.sample_rate, settings.seam_ms)
        return ARStream(stream_id, voice, params, output, self._lane(voice))

    def plan(self, state: ARStream, work: StreamInput) -> Plan | None:
        segment = state.segment
        if segment is not None:
            if segment.vocoder.pending():
                return _CHUNK
            return state.lane.step if segment.generating else _FINAL
        if work.pending:
            return state.lane.start if state.lane.slots.free else None
        return _FINISH if work.input_finished else None

    def prepare(self, plan: Plan, members: Sequence[tuple[ARStream, StreamInput]]) -> _ARUnit:
        state, work = members[0]
        if plan is state.lane.start:
            return _Prefill(state, work.pending.popleft(), state.lane.slots.acquire())
        if plan is state.lane.step:
            return _Step([m for m, _ in members])
        unit = {_CHUNK: _Chunk, _FINAL: _Final, _FINISH: _Finish}[plan]
        return unit((state,))

    def release(self, state: ARStream) -> None:
        state.release_slot()

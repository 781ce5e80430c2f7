"""The GPT-SoVITS v2 backend: prefill, batched T2S steps, vocoder chunks, a segment's last chunk.

A stream's next unit is, in order of preference: a vocoder chunk if enough
tokens wait for one; a T2S step while its segment generates (every stream of
the voice that could step joins one batched call: continuous batching, streams
join and leave between steps); its segment's last chunk once generation has
ended; the next segment's prefill (when the voice has a free cache slot); or
the end of the stream.  Prefills and steps of one voice share a lane, so one
T2S call per voice runs at a time; vocoder chunks of different streams run
side by side.  A slot goes back to the pool when its segment stops
generating, fails, or its stream is cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streamvox.engine.api import Plan, Segment, StreamInput, StreamSettings, SynthesisParams
from streamvox.engine.ar.slots import SlotPool
from streamvox.engine.audio.stream_output import StreamOutput
from streamvox.engine.backends.gpt_sovits.voice import ARSegment, GptSovitsVoice
from streamvox.engine.backends.gpt_sovits.words import word_weights
from streamvox.engine.events import EngineEvent, SegmentFinished, SegmentStarted, SegmentWords
from streamvox.engine.text.words import SpokenWord, proportional_timings, spoken_words

_UNKNOWN_LENGTH = 1 << 40
"""An AR segment's length is known only at its end; the seam before it uses the full overlap."""

_CHUNK = Plan("chunk")
_FINAL = Plan("final")
_FINISH = Plan("finish")


@dataclass(frozen=True)
class _VoiceLane:
    """One voice's T2S resources: its cache slots and the plans that use its T2S lane."""

    slots: SlotPool
    start: Plan
    step: Plan


@dataclass(eq=False)
class GptSovitsStream:
    """One stream's state: the segment being generated or vocoded, and its seams."""

    stream_id: str
    voice: GptSovitsVoice
    params: SynthesisParams
    output: StreamOutput
    lane: _VoiceLane
    ar: ARSegment | None = None
    words: list[SpokenWord] | None = None
    """The words of the segment being generated (for its estimated timings)."""
    piece_start: int = 0
    """``smoother.samples_in`` when that segment's audio began."""

    def in_progress(self) -> bool:
        return self.ar is not None

    def release_slot(self) -> None:
        """Give the segment's slot back (no unit may be using it)."""
        if self.ar is not None and self.ar.slot >= 0:
            slot, self.ar.slot = self.ar.slot, -1
            self.lane.slots.release(slot)


def _segment_seed(params: SynthesisParams, index: int) -> int:
    """The stream's seed spread over its segments (fresh entropy when the stream has none)."""
    if params.seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return (params.seed * 1_000_003 + index) % 2**63


class _ARUnit:
    """Base: after any AR unit, members that stopped generating, failed or left free their slots."""

    def __init__(self, members: Sequence[GptSovitsStream]) -> None:
        self.members = members

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        for member, member_gone in zip(self.members, gone, strict=True):
            if member_gone or failed or (member.ar is not None and not member.ar.generating):
                member.release_slot()


class _Prefill(_ARUnit):
    def __init__(self, state: GptSovitsStream, segment: Segment, slot: int) -> None:
        super().__init__((state,))
        self.state = state
        self.segment = segment
        self.slot = slot

    def run(self) -> list[EngineEvent]:
        state = self.state
        index, raw = self.segment
        text, words = spoken_words(raw)
        if not any(c.isalnum() for c in text):
            return [SegmentFinished(state.stream_id, index)]
        seed = _segment_seed(state.params, index)
        voice = state.voice
        state.ar = voice.start_segment(index, self.slot, voice.text_ids(text), seed, greedy=not state.params.noise)
        state.words = words
        state.piece_start = state.output.smoother.samples_in
        return [SegmentStarted(state.stream_id, index, state.output.smoother.start_piece(_UNKNOWN_LENGTH))]

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        if self.state.ar is None:
            self.state.lane.slots.release(self.slot)  # nothing to generate, or the prefill failed
        super().settle(gone, failed)


class _Step(_ARUnit):
    def run(self) -> list[EngineEvent]:
        voice = self.members[0].voice
        voice.step([m.ar for m in self.members if m.ar is not None])
        return []


class _Chunk(_ARUnit):
    def run(self) -> list[EngineEvent]:
        state = self.members[0]
        assert state.ar is not None
        return state.output.chunk(state.output.smoother.add(state.ar.vocoder.decode()))


class _Final(_ARUnit):
    def run(self) -> list[EngineEvent]:
        state = self.members[0]
        segment = state.ar
        assert segment is not None
        smoother = state.output.smoother
        out = np.concatenate([smoother.add(segment.vocoder.finish()), smoother.end_piece()])
        state.ar = None  # its slot went back when its generation ended
        words = state.words or []
        weights, pauses = word_weights(words)
        timings = proportional_timings(words, weights, pauses, smoother.samples_in - state.piece_start)
        return [
            SegmentWords(state.stream_id, segment.index, tuple(timings), estimated=True),
            *state.output.chunk(out),
            SegmentFinished(state.stream_id, segment.index),
        ]


class _Finish(_ARUnit):
    def run(self) -> list[EngineEvent]:
        return self.members[0].output.finish()


class GptSovitsBackend:
    """Loads GPT-SoVITS v2 voice directories and runs their streams."""

    kind = "gpt-sovits"

    def __init__(self) -> None:
        self._lanes: dict[GptSovitsVoice, _VoiceLane] = {}

    def load(self, source: str | Path, voice_id: str | None = None, threads: int = 0) -> GptSovitsVoice:
        voice = GptSovitsVoice.load(source)
        if voice_id is not None:
            voice.id = voice_id
        return voice

    def free_slots(self, voice: GptSovitsVoice) -> int:
        """Cache slots of ``voice`` no stream holds (a snapshot, for tests and metrics)."""
        return self._lane(voice).slots.free

    def bundled(self, threads: int = 0) -> None:
        return None  # users bring their own weights

    def _lane(self, voice: GptSovitsVoice) -> _VoiceLane:
        lane = self._lanes.get(voice)
        if lane is None:
            key = ("t2s", id(voice))
            slots = SlotPool(voice.config.max_streams, voice.t2s.release)
            lane = _VoiceLane(slots, Plan("start", lane=key), Plan("step", lane=key, group=key))
            self._lanes[voice] = lane
        return lane

    def open_stream(
        self, stream_id: str, voice: GptSovitsVoice, params: SynthesisParams, settings: StreamSettings
    ) -> GptSovitsStream:
        output = StreamOutput(stream_id, voice.sample_rate, settings.seam_ms)
        return GptSovitsStream(stream_id, voice, params, output, self._lane(voice))

    def plan(self, state: GptSovitsStream, work: StreamInput) -> Plan | None:
        segment = state.ar
        if segment is not None:
            if segment.vocoder.pending():
                return _CHUNK
            return state.lane.step if segment.generating else _FINAL
        if work.pending:
            return state.lane.start if state.lane.slots.free else None
        return _FINISH if work.input_finished else None

    def prepare(self, plan: Plan, members: Sequence[tuple[GptSovitsStream, StreamInput]]) -> _ARUnit:
        state, work = members[0]
        if plan is state.lane.start:
            return _Prefill(state, work.pending.popleft(), state.lane.slots.acquire())
        if plan is state.lane.step:
            return _Step([m for m, _ in members])
        unit = {_CHUNK: _Chunk, _FINAL: _Final, _FINISH: _Finish}[plan]
        return unit((state,))

    def release(self, state: GptSovitsStream) -> None:
        state.release_slot()

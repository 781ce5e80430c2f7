"""The Dia backend: prefill, batched decoder steps, DAC windows, a segment's last window.

A stream's next unit is, in order of preference: a DAC window if enough
frames wait for one (10 frames of context each side, so the streamed audio is
the offline decode); a decoder step while its segment generates (every stream
of the voice that can step joins one batched call: requests join and leave
between steps); its segment's last window once generation has ended; the next
segment's prefill (when the voice has a free cache slot); or the end of the
stream.  Prefills and steps of one voice share a lane (one model call per voice
at a time); DAC windows of different streams run side by side.  A slot goes
back when its segment stops generating, fails, or its stream is cancelled.

Each segment is its own Dia request; one that names no speaker speaks as the
last speaker its stream named (``[S1]`` at first).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from streamvox.engine.api import Plan, Segment, StreamInput, StreamSettings, SynthesisParams
from streamvox.engine.ar.slots import SlotPool
from streamvox.engine.audio.stream_output import StreamOutput
from streamvox.engine.backends.dia.text import has_speech, last_speaker, with_speaker
from streamvox.engine.backends.dia.voice import DiaRequest, DiaVoice
from streamvox.engine.backends.dia.words import speaker_free_words, word_weights
from streamvox.engine.events import EngineEvent, SegmentFinished, SegmentStarted, SegmentWords
from streamvox.engine.text.words import SpokenWord, proportional_timings

_UNKNOWN_LENGTH = 1 << 40
"""A segment's length is known only at its end; the seam before it uses the full overlap."""

_CHUNK = Plan("chunk")
_FINAL = Plan("final")
_FINISH = Plan("finish")


@dataclass(frozen=True)
class _VoiceLane:
    slots: SlotPool
    start: Plan
    step: Plan


@dataclass(eq=False)
class DiaStream:
    """One stream's state: the segment being generated or decoded, its speaker and its seams."""

    stream_id: str
    voice: DiaVoice
    params: SynthesisParams
    output: StreamOutput
    lane: _VoiceLane
    request: DiaRequest | None = None
    speaker: str = "[S1]"
    words: list[SpokenWord] | None = None
    piece_start: int = 0

    def in_progress(self) -> bool:
        return self.request is not None

    def release_slot(self) -> None:
        if self.request is not None and self.request.slot >= 0:
            slot, self.request.slot = self.request.slot, -1
            self.voice.release(slot)
            self.lane.slots.release(slot)


def _segment_seed(params: SynthesisParams, index: int) -> int | None:
    return None if params.seed is None else (params.seed * 1_000_003 + index) % 2**63


class _Unit:
    """Base: after any unit, members that stopped generating, failed or left free their slots."""

    def __init__(self, members: Sequence[DiaStream]) -> None:
        self.members = members

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        for member, member_gone in zip(self.members, gone, strict=True):
            request = member.request
            if member_gone or failed or (request is not None and not request.generating):
                member.release_slot()


class _Prefill(_Unit):
    def __init__(self, state: DiaStream, segment: Segment, slot: int) -> None:
        super().__init__((state,))
        self.state, self.segment, self.slot = state, segment, slot

    def run(self) -> list[EngineEvent]:
        state = self.state
        index, raw = self.segment
        text = with_speaker(raw, state.speaker)
        state.speaker = last_speaker(text, state.speaker)
        if not has_speech(raw):
            return [SegmentFinished(state.stream_id, index)]
        seed = _segment_seed(state.params, index)
        state.request = state.voice.start(index, self.slot, text, seed, greedy=not state.params.noise)
        state.words = speaker_free_words(raw)
        state.piece_start = state.output.smoother.samples_in
        return [SegmentStarted(state.stream_id, index, state.output.smoother.start_piece(_UNKNOWN_LENGTH))]

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        if self.state.request is None:
            self.state.voice.release(self.slot)
            self.state.lane.slots.release(self.slot)
        super().settle(gone, failed)


class _Step(_Unit):
    def run(self) -> list[EngineEvent]:
        requests = [m.request for m in self.members if m.request is not None]
        self.members[0].voice.step(requests)
        for request in requests:
            request.feed_vocoder()
        return []


class _Chunk(_Unit):
    def run(self) -> list[EngineEvent]:
        state = self.members[0]
        assert state.request is not None
        return state.output.chunk(state.output.smoother.add(state.request.vocoder.decode()))


class _Final(_Unit):
    def run(self) -> list[EngineEvent]:
        state = self.members[0]
        request = state.request
        assert request is not None
        request.feed_vocoder()
        smoother = state.output.smoother
        out = np.concatenate([smoother.add(request.vocoder.finish()), smoother.end_piece()])
        state.request = None
        words = state.words or []
        weights, pauses = word_weights(words)
        timings = proportional_timings(words, weights, pauses, smoother.samples_in - state.piece_start)
        return [
            SegmentWords(state.stream_id, request.index, tuple(timings), estimated=True),
            *state.output.chunk(out),
            SegmentFinished(state.stream_id, request.index),
        ]


class _Finish(_Unit):
    def run(self) -> list[EngineEvent]:
        return self.members[0].output.finish()


class DiaBackend:
    """Loads Dia voice directories and runs their streams."""

    kind = "dia"

    def __init__(self) -> None:
        self._lanes: dict[DiaVoice, _VoiceLane] = {}

    def load(self, source: str | Path, voice_id: str | None = None, threads: int = 0) -> DiaVoice:
        voice = DiaVoice.load(source)
        if voice_id is not None:
            voice.id = voice_id
        return voice

    def bundled(self, threads: int = 0) -> None:
        return None  # users bring their own weights

    def free_slots(self, voice: DiaVoice) -> int:
        """Cache slots of ``voice`` no stream holds (a snapshot, for tests and metrics)."""
        return self._lane(voice).slots.free

    def _lane(self, voice: DiaVoice) -> _VoiceLane:
        lane = self._lanes.get(voice)
        if lane is None:
            key = ("dia", id(voice))
            lane = _VoiceLane(
                SlotPool(voice.config.max_streams), Plan("start", lane=key), Plan("step", lane=key, group=key)
            )
            self._lanes[voice] = lane
        return lane

    def open_stream(
        self, stream_id: str, voice: DiaVoice, params: SynthesisParams, settings: StreamSettings
    ) -> DiaStream:
        output = StreamOutput(stream_id, voice.sample_rate, settings.seam_ms)
        return DiaStream(stream_id, voice, params, output, self._lane(voice))

    def plan(self, state: DiaStream, work: StreamInput) -> Plan | None:
        request = state.request
        if request is not None:
            if request.vocoder.pending():
                return _CHUNK
            return state.lane.step if request.generating else _FINAL
        if work.pending:
            return state.lane.start if state.lane.slots.free else None
        return _FINISH if work.input_finished else None

    def prepare(self, plan: Plan, members: Sequence[tuple[DiaStream, StreamInput]]) -> _Unit:
        state, work = members[0]
        if plan is state.lane.start:
            return _Prefill(state, work.pending.popleft(), state.lane.slots.acquire())
        if plan is state.lane.step:
            return _Step([m for m, _ in members])
        unit = {_CHUNK: _Chunk, _FINAL: _Final, _FINISH: _Finish}[plan]
        return unit((state,))

    def release(self, state: DiaStream) -> None:
        state.release_slot()

"""The engine thread: it alone decides what the models run, and hands units to workers.

Sessions talk to it only through a thread-safe inbox (``open``, ``add_segment``,
``finish``, ``abort``, ``report_playback``); it answers through each stream's
sink, always called on the engine thread.  Each loop iteration drains the
inbox (aborts take effect there, so a cancelled stream costs at most the
window in flight), then fills every idle worker with the scheduler's next
choice.  Workers report finished units back through the same inbox.

A unit is one vocoder window (flow and decoder); a segment's first unit also
runs its encoder (phonemes -> prior frames).  For autoregressive voices
(GPT-SoVITS) a unit is a segment's prefill, one batched T2S step for every
stream of that voice that is generating (continuous batching: streams join
and leave between steps), one vocoder chunk, or a segment's last chunk; a
voice's T2S calls run one at a time, its vocoder chunks side by side.  A stream has at most one unit in
flight, so its units run in order and its audio does not depend on which
worker ran them, or on what ran beside them.  ``workers`` units of different
streams run at once (one per core by default): onnxruntime's ``run`` releases
the GIL and is thread-safe, and single-threaded runs side by side use the
cores better than one multi-threaded run at a time (measured: see
``streamvox bench batch``).

Scheduling is deadline-first: a stream that has not sent audio yet goes before
all others (its first window decides TTFA), then the stream whose client will
run out of audio soonest.  Work for streams further than ``max_lead_s`` ahead
of their listener waits.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from streamvox.engine.crossfade import SeamSmoother
from streamvox.engine.events import (
    AudioChunk,
    EngineEvent,
    SegmentFinished,
    SegmentStarted,
    StreamAborted,
    StreamDone,
    StreamFailed,
    SynthesisParams,
)
from streamvox.engine.piper_segment import PiperSegment
from streamvox.engine.text_normalize import normalize_for_speech
from streamvox.engine.windows import WindowPlan

if TYPE_CHECKING:  # importing them loads torch, which Piper-only servers never need
    from streamvox.engine.gpt_sovits_voice import ARSegment, GptSovitsVoice
    from streamvox.engine.piper_voice import PiperVoice

    Voice = PiperVoice | GptSovitsVoice

log = logging.getLogger(__name__)

Sink = Callable[[EngineEvent], None]

_UNKNOWN_LENGTH = 1 << 40
"""An AR segment's length is known only at its end; the seam before it uses the full overlap."""


@dataclass(frozen=True)
class EngineConfig:
    """Engine-wide settings."""

    windows: WindowPlan = field(default_factory=WindowPlan)
    seam_ms: float = 10.0
    """Crossfade length where two text segments meet."""
    max_lead_s: float | None = None
    """Never run a stream more than this far ahead of its listener's playback (``None``: no
    limit, for files).  Work for streams far ahead waits, which frees the CPU for others."""
    urgent_windows: int = 2
    """A stream's first windows run on the multi-threaded (fastest) sessions, the rest on the
    single-threaded (cheapest) ones.  Counted, not timed: which session decodes a window must
    not depend on load, or a seeded stream's bytes would."""
    workers: int = 0
    """Units of different streams run at once (0: one per core)."""

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_lead_s is not None and self.max_lead_s <= 0:
            raise ValueError(f"max_lead_s must be > 0 or None, got {self.max_lead_s}")
        if self.seam_ms < 0 or self.urgent_windows < 0:
            raise ValueError("seam_ms and urgent_windows must be >= 0")

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass
class _Stream:
    id: str
    voice: Voice
    params: SynthesisParams
    sink: Sink
    smoother: SeamSmoother
    arrival: int
    rng: np.random.Generator | None
    pending: deque[tuple[int, str]] = field(default_factory=deque)
    current: PiperSegment | None = None
    current_index: int = -1
    ar: ARSegment | None = None
    """The AR segment being generated or vocoded (GPT-SoVITS voices)."""
    input_finished: bool = False
    first_audio_at: float | None = None
    playback_start: float | None = None
    """Monotonic time at which the listener's playback position was 0: our first audio, until
    the client reports its position."""
    compute_s: float = 0.0
    windows_done: int = 0
    busy: bool = False
    """A unit of this stream is on a worker: only that worker touches the synthesis state."""
    held: bool = False
    """Its owner cannot pass on more audio yet (a client that stopped reading): no units run."""

    def has_work(self) -> bool:
        return self.current is not None or self.ar is not None or bool(self.pending) or self.input_finished

    def deadline(self) -> float:
        """When the listener's playback runs dry if nothing more is produced."""
        if self.playback_start is None:
            return float("-inf")
        return self.playback_start + self.smoother.samples_out / self.voice.sample_rate

    def eligible_at(self, max_lead_s: float | None) -> float:
        """Earliest time this stream may run again under the lead limit."""
        if max_lead_s is None or self.playback_start is None:
            return float("-inf")
        return self.deadline() - max_lead_s


def _is_ar(voice: Voice) -> bool:
    """An autoregressive (GPT-SoVITS) voice, told apart without importing torch."""
    return voice.kind == "gpt-sovits"


class DeadlineScheduler:
    """Orders the streams that may run now.

    Contract: called on the engine thread with the runnable streams; returns
    up to ``count`` of them, most urgent first.  Streams without audio yet come
    first in arrival order; then earliest deadline (ties: arrival order).
    """

    def pick(self, streams: list[_Stream], count: int = 1) -> list[_Stream]:
        if count <= 0:
            return []
        ordered = sorted(streams, key=lambda s: (s.first_audio_at is not None, s.deadline(), s.arrival))
        return ordered[:count]


@dataclass(frozen=True)
class _Open:
    stream_id: str
    voice: Voice
    params: SynthesisParams
    sink: Sink


@dataclass(frozen=True)
class _Segment:
    stream_id: str
    index: int
    text: str


@dataclass(frozen=True)
class _Finish:
    stream_id: str


@dataclass(frozen=True)
class _Abort:
    stream_id: str


@dataclass(frozen=True)
class _Playback:
    stream_id: str
    playback_start: float


@dataclass(frozen=True)
class _Hold:
    stream_id: str
    held: bool


@dataclass(frozen=True)
class _Unit:
    """What one unit does, decided on the engine thread before a worker runs it."""

    segment: tuple[int, str] | None
    """A pending segment to start (its encoder runs first), or ``None`` to go on."""
    finish: bool
    """No segment left and the input is finished: flush the seam and end the stream."""
    kind: str = "piper"
    """``piper``, or for AR voices ``ar_start``, ``ar_step``, ``ar_chunk``, ``ar_final``."""
    batch: tuple[_Stream, ...] = ()
    """Every stream an ``ar_step`` advances (the dispatched one first)."""
    slot: int | None = None
    """The T2S slot an ``ar_start`` fills."""


@dataclass(frozen=True)
class _UnitDone:
    stream: _Stream
    unit: _Unit
    events: list[EngineEvent]
    error: BaseException | None
    seconds: float


_STOP = object()


class EngineCore:
    """Owns the models' execution: one scheduling thread and a pool of workers.

    All public methods are thread-safe."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.scheduler = DeadlineScheduler()
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._arrivals = itertools.count()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self.units_executed = 0
        self.units_by_concurrency: dict[int, int] = {}
        """How many units started while ``k`` units (this one included) were in flight:
        written by the engine thread, read by metrics."""
        self.ar_batch_sizes: dict[int, int] = {}
        """How many batched T2S steps advanced ``k`` streams at once (engine thread writes)."""

    def start(self) -> None:
        if self._thread is None:
            self._pool = ThreadPoolExecutor(self.config.worker_count, thread_name_prefix="streamvox-worker")
            self._thread = threading.Thread(target=self._run, name="streamvox-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Abort every stream, join the thread and let the workers finish their last unit."""
        if self._thread is not None:
            self._inbox.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def workers(self) -> int:
        return self.config.worker_count

    def open(self, stream_id: str, voice: Voice, params: SynthesisParams, sink: Sink) -> None:
        """Start a stream; segments follow with ``add_segment``."""
        self._inbox.put(_Open(stream_id, voice, params, sink))

    def add_segment(self, stream_id: str, index: int, text: str) -> None:
        """Queue one speakable span (raw client text; normalised here)."""
        self._inbox.put(_Segment(stream_id, index, text))

    def finish(self, stream_id: str) -> None:
        """No more segments: ``StreamDone`` follows the last one's audio."""
        self._inbox.put(_Finish(stream_id))

    def report_playback(self, stream_id: str, position_s: float, at: float | None = None) -> None:
        """The listener had played ``position_s`` of the stream at monotonic time ``at`` (now)."""
        when = time.monotonic() if at is None else at
        self._inbox.put(_Playback(stream_id, when - position_s))

    def abort(self, stream_id: str) -> None:
        """Drop the stream between two units of work; ``StreamAborted`` acknowledges."""
        self._inbox.put(_Abort(stream_id))

    def hold(self, stream_id: str, held: bool) -> None:
        """Pause (``True``) or resume the stream's generation, whatever its deadline: its owner's
        backlog of unsent audio is full.  The unit in flight, if any, still completes."""
        self._inbox.put(_Hold(stream_id, held))

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    @property
    def streams_with_work(self) -> int:
        """Read from other threads for metrics: a snapshot, possibly a step stale."""
        return sum(1 for s in list(self._streams.values()) if s.has_work())

    @property
    def units_in_flight(self) -> int:
        """Read from other threads for metrics: a snapshot."""
        return self._in_flight

    def _runnable(self, now: float) -> tuple[list[_Stream], float | None]:
        """Idle streams with work that the lead limit lets run now, and when the next one may."""
        runnable: list[_Stream] = []
        next_at: float | None = None
        for stream in self._streams.values():
            if stream.busy or stream.held or not stream.has_work():
                continue
            if _is_ar(stream.voice) and self._ar_action(stream) is None:
                continue
            at = stream.eligible_at(self.config.max_lead_s)
            if at <= now:
                runnable.append(stream)
            elif next_at is None or at < next_at:
                next_at = at
        return runnable, next_at

    def _run(self) -> None:
        while True:
            idle_workers = self.config.worker_count - self._in_flight
            runnable, next_at = self._runnable(time.monotonic()) if idle_workers else ([], None)
            try:
                if runnable:
                    command = self._inbox.get_nowait()
                elif next_at is not None:
                    command = self._inbox.get(timeout=max(0.0, next_at - time.monotonic()))
                else:
                    command = self._inbox.get()  # a command or a finished unit wakes us
            except queue.Empty:
                command = None
            while command is not None:
                if command is _STOP:
                    self._abort_all()
                    return
                self._apply(command)
                try:
                    command = self._inbox.get_nowait()
                except queue.Empty:
                    command = None
            idle_workers = self.config.worker_count - self._in_flight
            if idle_workers > 0:
                for stream in self.scheduler.pick(self._runnable(time.monotonic())[0], idle_workers):
                    self._dispatch(stream)

    def _apply(self, command: object) -> None:
        if isinstance(command, _UnitDone):
            self._complete(command)
            return
        if isinstance(command, _Open):
            rng = None
            if command.params.noise:
                rng = np.random.default_rng(command.params.seed)
            overlap = int(round(command.voice.sample_rate * self.config.seam_ms / 1000))
            self._streams[command.stream_id] = _Stream(
                command.stream_id,
                command.voice,
                command.params,
                command.sink,
                SeamSmoother(overlap),
                next(self._arrivals),
                rng,
            )
            return
        stream = self._streams.get(getattr(command, "stream_id", ""))
        if stream is None:
            return
        if isinstance(command, _Segment):
            stream.pending.append((command.index, command.text))
        elif isinstance(command, _Finish):
            stream.input_finished = True
        elif isinstance(command, _Playback):
            stream.playback_start = command.playback_start
        elif isinstance(command, _Hold):
            stream.held = command.held
        elif isinstance(command, _Abort):
            # A unit still on a worker finishes there; its output is dropped in ``_complete``.
            del self._streams[stream.id]
            if not stream.busy:
                self._release_slot(stream)
            self._emit(stream, StreamAborted(stream.id))

    def _abort_all(self) -> None:
        for stream in list(self._streams.values()):
            self._emit(stream, StreamAborted(stream.id))
        self._streams.clear()

    @staticmethod
    def _ar_action(stream: _Stream) -> str | None:
        """What an AR stream can do now (``None``: it waits, e.g. for its voice's T2S)."""
        voice: GptSovitsVoice = stream.voice  # type: ignore[assignment]
        segment = stream.ar
        if segment is not None:
            if segment.vocoder.pending():
                return "ar_chunk"
            if segment.generating:
                return None if voice.t2s_busy else "ar_step"
            return "ar_final"
        if stream.pending:
            return "ar_start" if not voice.t2s_busy and voice.free_slots else None
        return "finish" if stream.input_finished else None

    def _release_slot(self, stream: _Stream, slot: int | None = None) -> None:
        """Give an AR stream's T2S slot back, its segment's or the ``slot`` a prefill was handed
        (engine thread; no unit may be using it)."""
        if stream.ar is not None and stream.ar.slot >= 0:
            slot, stream.ar.slot = stream.ar.slot, -1
        if slot is not None and _is_ar(stream.voice):
            stream.voice.release_slot(slot)

    def _dispatch(self, stream: _Stream) -> None:
        """Decide the stream's next unit here, on the engine thread, and hand it to a worker."""
        if stream.busy:
            return  # already taken into another stream's batched step
        if _is_ar(stream.voice):
            unit = self._ar_unit(stream, stream.voice)  # type: ignore[arg-type]
            if unit is None:
                return
        else:
            segment = stream.pending.popleft() if stream.current is None and stream.pending else None
            unit = _Unit(segment, finish=segment is None and stream.current is None and stream.input_finished)
        for member in unit.batch or (stream,):
            member.busy = True
        self._in_flight += 1
        self.units_by_concurrency[self._in_flight] = self.units_by_concurrency.get(self._in_flight, 0) + 1
        assert self._pool is not None
        self._pool.submit(self._work, stream, unit)

    def _ar_unit(self, stream: _Stream, voice: GptSovitsVoice) -> _Unit | None:
        action = self._ar_action(stream)
        if action is None:
            return None
        if action == "ar_start":
            voice.t2s_busy = True
            return _Unit(stream.pending.popleft(), False, kind=action, slot=voice.acquire_slot())
        if action == "ar_step":
            # Every other stream of this voice that could step now joins (asked before the voice
            # is marked busy, which makes ``_ar_action`` say "wait").
            runnable = self._runnable(time.monotonic())[0]
            others = [s for s in runnable if s is not stream and s.voice is voice and self._ar_action(s) == action]
            voice.t2s_busy = True
            size = 1 + len(others)
            self.ar_batch_sizes[size] = self.ar_batch_sizes.get(size, 0) + 1
            return _Unit(None, False, kind=action, batch=(stream, *others))
        return _Unit(None, action == "finish", kind="piper" if action == "finish" else action)

    def _work(self, stream: _Stream, unit: _Unit) -> None:
        """Runs on a worker: the stream is ``busy``, so its synthesis state is ours alone."""
        started = time.perf_counter()
        try:
            events = self._step_ar(stream, unit) if unit.kind.startswith("ar_") else self._step(stream, unit)
            error = None
        except Exception as exc:  # one stream's failure must not stop the engine
            events, error = [], exc
        self._inbox.put(_UnitDone(stream, unit, events, error, time.perf_counter() - started))

    def _complete(self, done: _UnitDone) -> None:
        stream, unit = done.stream, done.unit
        members = unit.batch or (stream,)
        for member in members:
            member.busy = False
        self._in_flight -= 1
        self.units_executed += 1
        if unit.kind in ("ar_start", "ar_step"):
            stream.voice.t2s_busy = False  # type: ignore[union-attr]
        if unit.kind == "ar_start" and stream.ar is None:
            self._release_slot(stream, unit.slot)  # nothing to generate, or the prefill failed
        for member in members:
            gone = self._streams.get(member.id) is not member
            if gone or (member.ar is not None and not member.ar.generating) or done.error is not None:
                self._release_slot(member)  # aborted, finished generating, or failed: the slot is free
            if member is not stream and done.error is not None and not gone:
                self._fail(member, done.error)
        if self._streams.get(stream.id) is not stream:
            return  # aborted while its unit ran: StreamAborted has been sent
        if done.error is not None:
            self._fail(stream, done.error)
            return
        stream.compute_s += done.seconds
        for event in done.events:
            if isinstance(event, AudioChunk) and stream.first_audio_at is None:
                stream.first_audio_at = time.monotonic()
                if stream.playback_start is None:
                    stream.playback_start = stream.first_audio_at
            if isinstance(event, StreamDone):
                del self._streams[stream.id]
                event = replace(event, compute_s=stream.compute_s)
            self._emit(stream, event)

    def _fail(self, stream: _Stream, error: BaseException) -> None:
        log.error("stream %s failed", stream.id, exc_info=error)
        del self._streams[stream.id]
        self._emit(stream, StreamFailed(stream.id, "synthesis_failed", f"{type(error).__name__}: {error}"))

    def _step_ar(self, stream: _Stream, unit: _Unit) -> list[EngineEvent]:
        voice: GptSovitsVoice = stream.voice  # type: ignore[assignment]
        if unit.kind == "ar_start":
            assert unit.segment is not None and unit.slot is not None
            index, text = unit.segment
            text = normalize_for_speech(text)
            if not any(c.isalnum() for c in text):
                return [SegmentFinished(stream.id, index)]
            p = stream.params
            seed = (
                int(np.random.SeedSequence().generate_state(1)[0])
                if p.seed is None
                else (p.seed * 1_000_003 + index) % 2**63
            )
            stream.ar = voice.start_segment(index, unit.slot, voice.text_ids(text), seed, greedy=not p.noise)
            start = stream.smoother.start_piece(_UNKNOWN_LENGTH)
            return [SegmentStarted(stream.id, index, start)]
        segment = stream.ar
        assert segment is not None
        if unit.kind == "ar_step":
            voice.step([member.ar for member in unit.batch if member.ar is not None])
            return []
        if unit.kind == "ar_chunk":
            out = stream.smoother.add(segment.vocoder.decode())
            return [AudioChunk(stream.id, out)] if len(out) else []
        out = stream.smoother.add(segment.vocoder.finish())
        out = np.concatenate([out, stream.smoother.end_piece()])
        stream.ar = None  # its slot went back when its generation ended
        events: list[EngineEvent] = [AudioChunk(stream.id, out)] if len(out) else []
        events.append(SegmentFinished(stream.id, segment.index))
        return events

    def _step(self, stream: _Stream, unit: _Unit) -> list[EngineEvent]:
        events: list[EngineEvent] = []
        if unit.segment is not None:
            index, text = unit.segment
            ids = stream.voice.text_to_ids(normalize_for_speech(text))
            if not ids:
                events.append(SegmentFinished(stream.id, index))
                return events
            p = stream.params
            first = stream.windows_done == 0
            front = stream.voice.front(
                ids, stream.rng, p.length_scale, p.noise_scale, p.noise_w, p.speaker, urgent=first
            )
            segment = PiperSegment(stream.voice, front, self.config.windows, p.speaker, first)
            start = stream.smoother.start_piece(segment.samples)
            events.append(SegmentStarted(stream.id, index, start))
            stream.current = segment
            stream.current_index = index
            # The first window goes out in the same unit: with the encoder it decides TTFA.
        if stream.current is not None:
            segment = stream.current
            out = np.zeros(0, dtype=np.float32)
            if not segment.done:  # a segment of no frames at all has nothing to decode
                urgent = stream.windows_done < self.config.urgent_windows
                out = stream.smoother.add(segment.next_window(urgent=urgent))
                stream.windows_done += 1
            if segment.done:
                stream.current = None
                out = np.concatenate([out, stream.smoother.end_piece()])
            if len(out):
                events.append(AudioChunk(stream.id, out))
            if segment.done:
                events.append(SegmentFinished(stream.id, stream.current_index))
            return events
        if unit.finish:
            tail = stream.smoother.finish()
            if len(tail):
                events.append(AudioChunk(stream.id, tail))
            # compute_s is summed on the engine thread once this unit is back: set in _complete.
            events.append(StreamDone(stream.id, stream.smoother.samples_out, 0.0))
        return events

    def _emit(self, stream: _Stream, event: EngineEvent) -> None:
        try:
            stream.sink(event)
        except Exception:
            log.exception("sink of stream %s raised; event dropped", stream.id)

"""The engine: one scheduling thread owns every stream; a pool of workers runs their units.

Sessions talk to it only through a thread-safe inbox (``open``, ``add_segment``,
``finish``, ``abort``, ``report_playback``, ``hold``); it answers through each
stream's sink, always called on the engine thread.  Each loop iteration drains
the inbox (aborts take effect there, so a cancelled stream costs at most the
unit in flight), then fills every idle worker with the scheduler's next
choice.  Workers report finished units back through the same inbox.

The core names no model.  A stream's backend (looked up by the voice's kind)
says what the stream could do next as a :class:`~streamvox.engine.api.Plan`;
the scheduler orders the streams that can act, keeps units of one lane one at
a time, and groups streams whose plans share a group into one batched unit;
the backend then prepares the unit, which runs on a worker.  A stream has at
most one unit in flight, so its units run in order and its audio does not
depend on which worker ran them, or on what ran beside them.  ``workers``
units run at once (one per core by default): the model runtimes release the
GIL, and single-threaded runs side by side use the cores better than one
multi-threaded run at a time (measured: see ``streamvox bench batch``).

Scheduling is deadline-first: a stream that has not sent audio yet goes before
all others (its first unit decides TTFA), then the stream whose client will
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
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Protocol

from streamvox.engine.api import Backend, Plan, Segment, StreamSettings, SynthesisParams, Unit, Voice
from streamvox.engine.events import AudioChunk, EngineEvent, StreamAborted, StreamDone, StreamFailed
from streamvox.engine.memory import release_free_heap
from streamvox.engine.scheduler import DeadlineScheduler, EngineStream
from streamvox.engine.unit_trace import UnitRecord, UnitTraceWriter

log = logging.getLogger(__name__)

ENGINE_THREAD_NAME = "streamvox-engine"
WORKER_THREAD_PREFIX = "streamvox-worker"
"""The engine's thread names (what ``/metrics`` tells the roles of the server's threads by)."""

Sink = Callable[[EngineEvent], None]


class VoiceSource(Protocol):
    """Where the engine finds voices and their backends (the :class:`VoiceRegistry`)."""

    def get(self, voice_id: str | None) -> Voice: ...
    def backend(self, kind: str) -> Backend: ...
    def loaded(self) -> list[Voice]: ...


@dataclass(frozen=True)
class EngineConfig:
    """Engine-wide settings."""

    seam_ms: float = 10.0
    """Crossfade length where two text segments meet."""
    max_lead_s: float | None = None
    """Never run a stream more than this far ahead of its listener's playback (``None``: no
    limit, for files).  Work for streams far ahead waits, which frees the CPU for others."""
    urgent_windows: int = 0
    """A stream's first windows run on the multi-threaded sessions, the rest on the
    single-threaded (cheapest) ones.  Counted, not timed: which session decodes a window must
    not depend on load, or a seeded stream's bytes would (the two give the same samples: the
    A/Bs' bytes were identical).  None since the streaming decoder, whose first window decodes
    35 frames instead of 44: on one thread the first audio came no later (server TTFA p50 0.95
    and 0.96 of before) for 2-3 % less CPU per audio second, and 40 listeners passed 3 runs of
    3 against none (``scripts/ab.py``, 2026-12-05)."""
    workers: int = 0
    """Units of different streams run at once (0: one per core)."""
    unit_deadline_s: float | None = 60.0
    """A unit still running after this long fails its streams (``synthesis_failed``) and its
    worker is replaced by a spare; the server reports unhealthy while as many workers are stuck
    as it normally has (``None``: no deadline)."""
    first_audio_s: float = 0.1
    """A stream's first audio is scheduled as due this long after its first segment is queued:
    before it, work for playing streams whose audio runs out sooner goes first (0: new streams
    always first)."""
    lead_work_s: float = 1.0
    """A unit whose stream had at least this much audio still to play when it started is work
    done ahead; a late unit that started while one ran counts as late behind it (metrics)."""
    idle_trim_s: float | None = 2.0
    """Once no stream has existed for this long after some work, every voice gives back the
    memory its runtime kept for the shapes it saw, and the C heap returns its free pages
    (``None``: never).  Costs nothing under load; bounds a quiet server's RSS."""
    unit_trace: str | None = None
    """A file to append a line to for every unit run (:mod:`streamvox.engine.unit_trace`), or
    ``None``: no trace."""

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_lead_s is not None and self.max_lead_s <= 0:
            raise ValueError(f"max_lead_s must be > 0 or None, got {self.max_lead_s}")
        if self.seam_ms < 0 or self.urgent_windows < 0:
            raise ValueError("seam_ms and urgent_windows must be >= 0")
        if self.unit_deadline_s is not None and self.unit_deadline_s <= 0:
            raise ValueError(f"unit_deadline_s must be > 0 or None, got {self.unit_deadline_s}")
        if self.first_audio_s < 0:
            raise ValueError(f"first_audio_s must be >= 0, got {self.first_audio_s}")
        if self.lead_work_s <= 0:
            raise ValueError(f"lead_work_s must be > 0, got {self.lead_work_s}")
        if self.idle_trim_s is not None and self.idle_trim_s <= 0:
            raise ValueError(f"idle_trim_s must be > 0 or None, got {self.idle_trim_s}")

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def stream_settings(self) -> StreamSettings:
        return StreamSettings(seam_ms=self.seam_ms, urgent_windows=self.urgent_windows)


@dataclass(frozen=True)
class _Open:
    stream_id: str
    voice: Voice
    backend: Backend
    params: SynthesisParams
    sink: Sink


@dataclass(frozen=True)
class _Segment:
    stream_id: str
    segment: Segment


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


@dataclass(frozen=True, eq=False)
class _Dispatched:
    """A unit on a worker, and the streams it advances (the dispatched one first)."""

    unit: Unit
    plan: Plan
    members: tuple[EngineStream, ...]
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    """When the dispatched stream's listener would run dry without this unit (``None``: the
    stream has no audio out yet, so no listener is waiting on a buffer)."""
    behind_lead_work: bool = False
    """When it started, a worker was running work at least ``lead_work_s`` ahead of its listener."""

    @property
    def slack(self) -> float | None:
        """Audio the listener still had to play when the unit started (negative: already late)."""
        return None if self.deadline is None else self.deadline - self.started


@dataclass(frozen=True)
class _UnitDone:
    job: _Dispatched
    events: list[EngineEvent]
    error: BaseException | None
    seconds: float
    cpu_seconds: float
    """CPU time of the worker's thread while it ran the unit."""


_STOP = object()
_FAILED_MESSAGE = "synthesis failed for this context (stream {}; the server log has the details)"


def _trim_memory(voices: list[Voice]) -> None:
    try:
        for voice in voices:
            voice.trim_memory()
        release_free_heap()
    except Exception:
        log.exception("trimming idle memory failed")


@dataclass
class _Counters:
    """Written by the engine thread, read by metrics (snapshots)."""

    units_executed: int = 0
    units_by_concurrency: dict[int, int] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)
    late_units: int = 0
    late_s: float = 0.0
    late_behind_lead_work: int = 0


class EngineCore:
    """Owns the models' execution: one scheduling thread and a pool of workers.

    All public methods are thread-safe."""

    def __init__(self, voices: VoiceSource, config: EngineConfig | None = None) -> None:
        self.voices = voices
        self.config = config or EngineConfig()
        self.scheduler = DeadlineScheduler(self.config.max_lead_s, self.config.first_audio_s)
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._streams: dict[str, EngineStream] = {}
        self._arrivals = itertools.count()
        self._busy_lanes: set[Hashable] = set()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._counters = _Counters()
        self._worked_since_trim = False
        self._running: set[_Dispatched] = set()
        """Units on workers (their number is the engine's load), not those past their deadline."""
        self._stuck: set[_Dispatched] = set()
        """Units past their deadline: their streams have failed, spare workers stand in for them."""
        self._died: str | None = None
        self._trace: UnitTraceWriter | None = None

    def start(self) -> None:
        if self._thread is None:
            if self.config.unit_trace is not None:
                self._trace = UnitTraceWriter(self.config.unit_trace)
            # Twice the workers: the spares stand in for workers stuck in a unit past its deadline.
            self._pool = ThreadPoolExecutor(2 * self.config.worker_count, thread_name_prefix=WORKER_THREAD_PREFIX)
            self._thread = threading.Thread(target=self._run, name=ENGINE_THREAD_NAME, daemon=True)
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
        if self._trace is not None:
            self._trace.close()
            self._trace = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def workers(self) -> int:
        return self.config.worker_count

    @property
    def problem(self) -> str | None:
        """Why the engine cannot serve (``/healthz`` says 503 with it), or ``None``.  A snapshot."""
        if self._died is not None:
            return self._died
        if not self.running:
            return "the engine thread is not running"
        stuck = len(self._stuck)
        if stuck >= self.config.worker_count:
            return f"{stuck} worker(s) stuck in a unit past the {self.config.unit_deadline_s:g} s deadline"
        return None

    @property
    def stuck_workers(self) -> int:
        return len(self._stuck)

    def open(self, stream_id: str, voice_id: str | None, params: SynthesisParams, sink: Sink) -> Voice:
        """Start a stream on voice ``voice_id`` (``None``: the default voice) and return that
        voice; segments follow with ``add_segment``.  Raises ``UnknownVoiceError`` at once."""
        voice = self.voices.get(voice_id)
        self._inbox.put(_Open(stream_id, voice, self.voices.backend(voice.kind), params, sink))
        return voice

    def add_segment(self, stream_id: str, index: int, text: str, lead: str = "", preview: str = "") -> None:
        """Queue one speakable span (raw client text; the backend normalises it), with the text
        spoken before it and after it in its sentence when known (see :class:`Segment`)."""
        self._inbox.put(_Segment(stream_id, Segment(index, text, lead, preview)))

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
        return len(self._running)

    @property
    def units_executed(self) -> int:
        return self._counters.units_executed

    @property
    def units_by_concurrency(self) -> dict[int, int]:
        """How many units started while ``k`` units (this one included) were in flight."""
        return self._counters.units_by_concurrency

    @property
    def late_units(self) -> int:
        """Units that finished after their listener's buffer ran dry: the engine's own count of
        underruns, as far as the listener's reported position (else our first audio) tells it.
        Read from other threads for metrics: a snapshot."""
        return self._counters.late_units

    @property
    def late_seconds(self) -> float:
        """How long after the buffer ran dry the late units finished, summed."""
        return self._counters.late_s

    @property
    def late_behind_lead_work(self) -> int:
        """Late units that started while a worker ran work at least ``lead_work_s`` ahead of its
        listener: the lateness that preempting work done ahead might have avoided (a unit is
        never stopped once started).  The other late units started beside urgent work only."""
        return self._counters.late_behind_lead_work

    @property
    def batch_sizes(self) -> dict[int, int]:
        """How many batched units (plans with a group) advanced ``k`` streams at once."""
        return self._counters.batch_sizes

    def _runnable(self) -> tuple[list[EngineStream], float | None]:
        return self.scheduler.runnable(list(self._streams.values()), time.monotonic(), self._busy_lanes)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self._died = f"the engine thread died ({type(exc).__name__}); restart the server"
            log.critical("engine thread died; every stream fails and /healthz reports 503", exc_info=exc)
            for stream in list(self._streams.values()):
                self._emit(stream, StreamFailed(stream.id, "synthesis_failed", _FAILED_MESSAGE.format(stream.id)))
            self._streams.clear()
            raise

    def _next_deadline(self, next_at: float | None) -> float | None:
        deadline = self.config.unit_deadline_s
        if deadline is None or not self._running:
            return next_at
        overdue_at = min(job.started for job in self._running) + deadline
        return overdue_at if next_at is None else min(next_at, overdue_at)

    def _loop(self) -> None:
        while True:
            idle_workers = self.config.worker_count - len(self._running)
            runnable, next_at = self._runnable() if idle_workers else ([], None)
            next_at = self._next_deadline(next_at)
            try:
                if runnable:
                    command = self._inbox.get_nowait()
                elif next_at is not None:
                    command = self._inbox.get(timeout=max(0.0, next_at - time.monotonic()))
                elif self._trim_due():
                    command = self._inbox.get(timeout=self.config.idle_trim_s)
                else:
                    command = self._inbox.get()  # a command or a finished unit wakes us
            except queue.Empty:
                command = None
                if self._trim_due():
                    self._start_trim()
            while command is not None:
                if command is _STOP:
                    self._abort_all()
                    return
                self._apply(command)
                try:
                    command = self._inbox.get_nowait()
                except queue.Empty:
                    command = None
            self._expire_overdue()
            idle_workers = self.config.worker_count - len(self._running)
            if idle_workers > 0:
                for stream in self.scheduler.pick(self._runnable()[0], idle_workers):
                    self._dispatch(stream)

    def _trim_due(self) -> bool:
        return self._worked_since_trim and not self._streams and self.config.idle_trim_s is not None

    def _start_trim(self) -> None:
        """Idle: voices give back their runtimes' cached memory, on a worker (not counted as a unit)."""
        self._worked_since_trim = False
        assert self._pool is not None
        self._pool.submit(_trim_memory, self.voices.loaded())

    def _expire_overdue(self) -> None:
        """Units past their deadline: fail their streams, free their slots for spare workers."""
        deadline = self.config.unit_deadline_s
        if deadline is None or not self._running:
            return
        now = time.monotonic()
        for job in [j for j in self._running if now - j.started > deadline]:
            self._stuck.add(job)
            self._release_slot(job)
            log.error("a %s unit of %s ran past the %g s deadline; its streams fail", job.plan.action,
                      ", ".join(m.id for m in job.members), deadline)  # fmt: skip
            for member in job.members:
                if self._streams.get(member.id) is member:
                    del self._streams[member.id]
                    message = f"synthesis took longer than {deadline:g} s (stream {member.id}); the server log has more"
                    self._emit(member, StreamFailed(member.id, "synthesis_failed", message))

    def _release_slot(self, job: _Dispatched) -> None:
        self._running.discard(job)
        for member in job.members:
            member.busy = False
        if job.plan.lane is not None:
            self._busy_lanes.discard(job.plan.lane)

    def _apply(self, command: object) -> None:
        if isinstance(command, _UnitDone):
            self._worked_since_trim = True
            self._complete(command)
            return
        if isinstance(command, _Open):
            state = command.backend.open_stream(
                command.stream_id, command.voice, command.params, self.config.stream_settings
            )
            self._streams[command.stream_id] = EngineStream(
                command.stream_id, command.voice, command.backend, state, command.sink, next(self._arrivals)
            )
            return
        stream = self._streams.get(getattr(command, "stream_id", ""))
        if stream is None:
            return
        if isinstance(command, _Segment):
            stream.pending.append(command.segment)
            if stream.ready_at is None:
                stream.ready_at = time.monotonic()
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
                stream.backend.release(stream.state)
            self._emit(stream, StreamAborted(stream.id))

    def _abort_all(self) -> None:
        for stream in list(self._streams.values()):
            self._emit(stream, StreamAborted(stream.id))
        self._streams.clear()

    def _dispatch(self, stream: EngineStream) -> None:
        """Decide the stream's next unit here, on the engine thread, and hand it to a worker."""
        plan = self.scheduler.can_act(stream, self._busy_lanes)
        if plan is None:
            return  # taken into another stream's batch, or its lane was taken meanwhile
        members = [stream]
        if plan.group is not None:
            members = self.scheduler.group(stream, plan, self._runnable()[0], self._busy_lanes)
            self._counters.batch_sizes[len(members)] = self._counters.batch_sizes.get(len(members), 0) + 1
        unit = stream.backend.prepare(plan, [(m.state, m) for m in members])
        if plan.lane is not None:
            self._busy_lanes.add(plan.lane)
        for member in members:
            member.busy = True
        lead = self.config.lead_work_s
        job = _Dispatched(
            unit,
            plan,
            tuple(members),
            deadline=None if stream.first_audio_at is None else stream.deadline(),
            behind_lead_work=any(other.slack is not None and other.slack >= lead for other in self._running),
        )
        self._running.add(job)
        counts = self._counters.units_by_concurrency
        counts[len(self._running)] = counts.get(len(self._running), 0) + 1
        assert self._pool is not None
        self._pool.submit(self._work, job)

    def _work(self, job: _Dispatched) -> None:
        """Runs on a worker: the members are ``busy``, so their synthesis state is ours alone."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        try:
            events = job.unit.run()
            error = None
        except BaseException as exc:  # one stream's failure must not stop the engine, nor lose the worker
            events, error = [], exc
        cpu = time.thread_time() - cpu_started
        self._inbox.put(_UnitDone(job, events, error, time.perf_counter() - started, cpu))

    def _complete(self, done: _UnitDone) -> None:
        job = done.job
        stream = job.members[0]
        self._counters.units_executed += 1
        if job in self._stuck:  # it came back after its deadline: its streams failed already
            self._stuck.discard(job)
            log.warning("the unit that overran its deadline finished after %.1f s", done.seconds)
            job.unit.settle([True] * len(job.members), True)
            return
        self._release_slot(job)
        gone = [self._streams.get(m.id) is not m for m in job.members]
        job.unit.settle(gone, done.error is not None)
        if done.error is not None:
            for member, member_gone in zip(job.members[1:], gone[1:], strict=True):
                if not member_gone:
                    self._fail(member, done.error)
        if gone[0]:
            return  # aborted while its unit ran: StreamAborted has been sent
        if done.error is not None:
            self._fail(stream, done.error)
            return
        stream.compute_s += done.seconds
        finished = time.monotonic()
        audio = [event for event in done.events if isinstance(event, AudioChunk)]
        if job.deadline is not None and audio:
            late_by = finished - job.deadline
            if late_by > 0:
                self._counters.late_units += 1
                self._counters.late_s += late_by
                self._counters.late_behind_lead_work += job.behind_lead_work
        if self._trace is not None and not self._trace.write(self._record(done, stream, finished, audio)):
            log.warning("the unit trace %s cannot be written to; tracing stops", self._trace.path)
            self._trace = None
        for event in done.events:
            if isinstance(event, AudioChunk):
                stream.samples_out += len(event.pcm)
                if stream.first_audio_at is None:
                    stream.first_audio_at = time.monotonic()
                    if stream.playback_start is None:
                        stream.playback_start = stream.first_audio_at
            if isinstance(event, StreamDone):
                del self._streams[stream.id]
                event = replace(event, compute_s=stream.compute_s)
            self._emit(stream, event)

    @staticmethod
    def _record(done: _UnitDone, stream: EngineStream, finished: float, audio: list[AudioChunk]) -> UnitRecord:
        """The trace's line for a unit of ``stream`` that finished at ``finished`` with ``audio``
        (before the stream's own counts take it in)."""
        job = done.job
        return UnitRecord(
            stream=stream.id,
            action=job.plan.action,
            batch=len(job.members),
            started=job.started,
            finished=finished,
            run_s=done.seconds,
            cpu_s=done.cpu_seconds,
            deadline=job.deadline,
            audio_s=sum(len(chunk.pcm) for chunk in audio) / stream.voice.sample_rate,
            first_audio=bool(audio) and stream.first_audio_at is None,
        )

    def _fail(self, stream: EngineStream, error: BaseException) -> None:
        """The stream's unit raised: the details go to the log only (they may name files, models or
        the client's text); the client gets a generic message with the stream id to find them."""
        log.error("stream %s failed", stream.id, exc_info=error)
        del self._streams[stream.id]
        self._emit(stream, StreamFailed(stream.id, "synthesis_failed", _FAILED_MESSAGE.format(stream.id)))

    def _emit(self, stream: EngineStream, event: EngineEvent) -> None:
        try:
            stream.sink(event)
        except Exception:
            log.exception("sink of stream %s raised; event dropped", stream.id)

"""Which streams run next: eligibility (holds, lanes, the lead limit), deadline order, batch grouping.

Everything here runs on the engine thread and knows no model: a stream's
next step is a :class:`~streamvox.engine.api.Plan` its backend made, and the
scheduler reads only the plan's lane and group.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from streamvox.engine.api import Backend, Plan, Segment, StreamState, Voice
from streamvox.engine.events import EngineEvent

Sink = Callable[[EngineEvent], None]


@dataclass(eq=False)
class EngineStream:
    """The engine's record of one stream: its queued text, its timing and its backend state.

    Engine thread only, except ``state``, which the worker running the stream's unit owns
    while ``busy`` is set."""

    id: str
    voice: Voice
    backend: Backend
    state: StreamState
    sink: Sink
    arrival: int
    pending: deque[Segment] = field(default_factory=deque)
    input_finished: bool = False
    first_audio_at: float | None = None
    ready_at: float | None = None
    """Monotonic time its first segment was queued: its first audio is due a budget after it."""
    playback_start: float | None = None
    """Monotonic time at which the listener's playback position was 0: our first audio, until
    the client reports its position."""
    samples_out: int = 0
    """Samples emitted so far (model rate)."""
    compute_s: float = 0.0
    busy: bool = False
    """A unit of this stream is on a worker: only that worker touches ``state``."""
    held: bool = False
    """Its owner cannot pass on more audio yet (a client that stopped reading): no units run."""

    def has_work(self) -> bool:
        return self.state.in_progress() or bool(self.pending) or self.input_finished

    def plan(self) -> Plan | None:
        return self.backend.plan(self.state, self)

    def deadline(self) -> float:
        """When the listener's playback runs dry if nothing more is produced."""
        if self.playback_start is None:
            return float("-inf")
        return self.playback_start + self.samples_out / self.voice.sample_rate

    def due(self, first_audio_s: float) -> float:
        """When its next audio is due: the deadline, or for a stream with no audio yet,
        ``first_audio_s`` after its first segment was queued."""
        if self.first_audio_at is None:
            return float("-inf") if self.ready_at is None else self.ready_at + first_audio_s
        return self.deadline()

    def eligible_at(self, max_lead_s: float | None) -> float:
        """Earliest time this stream may run again under the lead limit."""
        if max_lead_s is None or self.playback_start is None:
            return float("-inf")
        return self.deadline() - max_lead_s


class DeadlineScheduler:
    """Orders and groups the streams that may run now.

    Contract: called on the engine thread.  ``runnable`` filters by holds, busy
    lanes and the lead limit; ``pick`` returns up to ``count`` streams, most
    urgent first (earliest due, ties by arrival: a stream's first audio is due
    ``first_audio_s`` after its first segment, so a burst of new streams does
    not starve a playing one whose audio runs out sooner); ``group`` gathers the
    streams a batched unit advances together.
    """

    def __init__(self, max_lead_s: float | None = None, first_audio_s: float = 0.0) -> None:
        self.max_lead_s = max_lead_s
        self.first_audio_s = first_audio_s

    @staticmethod
    def can_act(stream: EngineStream, busy_lanes: set[Hashable]) -> Plan | None:
        """The stream's plan, if it is free to carry it out now (lead limit aside)."""
        if stream.busy or stream.held or not stream.has_work():
            return None
        plan = stream.plan()
        if plan is None or (plan.lane is not None and plan.lane in busy_lanes):
            return None
        return plan

    def runnable(
        self, streams: list[EngineStream], now: float, busy_lanes: set[Hashable]
    ) -> tuple[list[EngineStream], float | None]:
        """Streams that may run now, and when the next one held back by the lead limit may."""
        ready: list[EngineStream] = []
        next_at: float | None = None
        for stream in streams:
            if self.can_act(stream, busy_lanes) is None:
                continue
            at = stream.eligible_at(self.max_lead_s)
            if at <= now:
                ready.append(stream)
            elif next_at is None or at < next_at:
                next_at = at
        return ready, next_at

    def pick(self, streams: list[EngineStream], count: int = 1) -> list[EngineStream]:
        if count <= 0:
            return []
        ordered = sorted(streams, key=lambda s: (s.due(self.first_audio_s), s.arrival))
        return ordered[:count]

    def group(
        self, lead: EngineStream, plan: Plan, runnable: list[EngineStream], busy_lanes: set[Hashable]
    ) -> list[EngineStream]:
        """``lead`` first, then every other runnable stream whose plan shares ``plan.group``."""
        members = [lead]
        if plan.group is None:
            return members
        for other in runnable:
            if other is lead:
                continue
            other_plan = self.can_act(other, busy_lanes)
            if other_plan is not None and other_plan.group == plan.group:
                members.append(other)
        return members

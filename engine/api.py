"""The backend seam: what the engine core and the sessions need of a voice family.

A backend (one folder under ``engine/backends/``) turns a stream's text into
audio in *units*: pieces of work small enough that a cancel costs at most one
of them.  The core never looks inside a unit; it asks the backend what a
stream could do next (:meth:`Backend.plan`, free of side effects), lets the
scheduler order and group the streams that can act, takes the work with
:meth:`Backend.prepare` and runs the unit on a worker.

Threads: ``plan``, ``prepare``, :meth:`Unit.settle` and :meth:`Backend.release`
run on the engine thread; :meth:`Unit.run` runs on a worker, while every
stream it touches is marked busy, so it alone touches their synthesis state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from streamvox.engine.events import EngineEvent


class Segment(NamedTuple):
    """One speakable span queued for a stream."""

    index: int
    text: str
    """The raw client text to speak."""
    lead: str = ""
    """Text spoken just before it in the same sentence, by the segment before: a backend may read it
    for context (never speak it again)."""
    preview: str = ""
    """The words that follow, already known, which the next segment speaks: a backend may read them
    for the prosody of ``text`` (never speak them here)."""


class VoiceLoadError(ValueError):
    """A voice's files are missing, malformed, or not of the family they were given as."""


class UnknownVoiceError(KeyError):
    """No voice with that id is loaded."""


class UnknownBackendError(VoiceLoadError):
    """No backend of that kind is registered."""


@dataclass(frozen=True)
class SynthesisParams:
    """Per-stream synthesis settings (the voice's own config fills the ``None``\\s)."""

    length_scale: float | None = None
    """> 1 speaks slower; 1 / speed."""
    noise_scale: float | None = None
    noise_w: float | None = None
    speaker: int = 0
    seed: int | None = None
    """Seeds every noise draw of the stream: the same text and seed give the same audio."""
    noise: bool = True
    """``False`` turns all sampling noise off (deterministic regardless of seed)."""


@dataclass(frozen=True)
class StreamSettings:
    """Engine-wide settings a backend applies to each stream it opens."""

    seam_ms: float
    """Crossfade length where two text segments meet."""
    urgent_windows: int
    """How many of a stream's first units may use the multi-threaded (fastest) runtimes."""


SETTINGS = ("speed", "speaker", "seed", "noise")
"""The per-request settings a voice can honour (``Voice.honours`` names a subset)."""


class Voice(Protocol):
    """What sessions and the engine read of any loaded voice."""

    id: str
    kind: str
    """The backend's registry key (``piper``, ``gpt-sovits``, ...)."""

    @property
    def sample_rate(self) -> int: ...
    @property
    def language(self) -> str: ...
    @property
    def num_speakers(self) -> int: ...
    @property
    def length_scale(self) -> float:
        """The voice's own duration multiplier (a request's speed divides it)."""
        ...

    @property
    def honours(self) -> frozenset[str]:
        """The names from :data:`SETTINGS` this voice applies; others must be left at their defaults."""
        ...

    def warm_up(self) -> None:
        """Run the models once on typical shapes so the first listener does not pay for it."""
        ...

    def trim_memory(self) -> None:
        """Give back memory the model runtime keeps for shapes it has seen (the engine calls it
        on a worker once it has been idle a while; it may run beside other units)."""
        ...


class StreamInput(Protocol):
    """The text a stream has queued, as the engine core keeps it (read and popped by backends)."""

    pending: deque[Segment]
    input_finished: bool


class StreamState(Protocol):
    """A backend's per-stream synthesis state (whatever it needs between units)."""

    stream_id: str

    def in_progress(self) -> bool:
        """A segment is being synthesised (work remains even with nothing queued)."""
        ...


@dataclass(frozen=True)
class Plan:
    """What a stream could do next, as the scheduler needs to know it."""

    action: str
    """The backend's name for the step (for metrics and logs)."""
    lane: Hashable | None = None
    """Units on the same lane run one at a time (e.g. one model call per voice at a time)."""
    group: Hashable | None = None
    """Streams whose plans share a group are advanced together by one batched unit."""


class Unit(Protocol):
    """One piece of work, prepared on the engine thread and run on a worker."""

    def run(self) -> list[EngineEvent]:
        """Do the work (worker thread); events are for the stream the unit was dispatched for."""
        ...

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        """Back on the engine thread: ``gone[i]`` says member ``i`` was aborted meanwhile and
        ``failed`` that ``run`` raised.  Free whatever the members no longer need."""
        ...


class Backend(Protocol):
    """One voice family.  Instances are created once per registry and may keep per-voice
    resources (model slot pools); they are used by one engine thread at a time."""

    kind: str

    def load(self, source: str | Path, voice_id: str | None = None, threads: int = 0) -> Voice:
        """Load a voice from a local path (never a hub); errors are :class:`VoiceLoadError`."""
        ...

    def bundled(self, threads: int = 0) -> Voice | None:
        """The voice this family ships inside the package, if any."""
        ...

    def open_stream(
        self, stream_id: str, voice: Voice, params: SynthesisParams, settings: StreamSettings
    ) -> StreamState:
        """Fresh per-stream state (engine thread)."""
        ...

    def plan(self, state: StreamState, work: StreamInput) -> Plan | None:
        """What the stream could do now, or ``None`` if it must wait (engine thread, no side effects)."""
        ...

    def prepare(self, plan: Plan, members: Sequence[tuple[StreamState, StreamInput]]) -> Unit:
        """Take the work ``plan`` names for ``members`` (the dispatched stream first, then the
        streams grouped with it) and return the unit that does it (engine thread)."""
        ...

    def release(self, state: StreamState) -> None:
        """The stream is gone and no unit of it runs: free what it holds (engine thread)."""
        ...

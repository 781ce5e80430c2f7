"""A test-only backend wrapper that injects faults into real Piper units.

A stream whose text contains one of the trigger words has its next unit
replaced: ``FAULT_RAISE`` raises an exception, ``FAULT_HANG`` sleeps
``hang_s`` before running, ``FAULT_DIE`` raises a ``BaseException`` (what a
worker thread dies of).  Every other stream runs the real backend untouched.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from streamvox.engine.api import Plan, StreamSettings, SynthesisParams, Unit
from streamvox.engine.events import EngineEvent
from streamvox.engine.registry import VoiceRegistry

KIND = "faulty-piper"
TRIGGERS = ("FAULT_RAISE", "FAULT_HANG", "FAULT_DIE")


class WorkerDeath(BaseException):
    """Not an Exception: what kills a thread (as SystemExit would)."""


class InjectedFault(RuntimeError):
    pass


class FaultyVoice:
    """The bundled voice under another kind (so the wrapper backend serves it)."""

    def __init__(self, inner: Any, voice_id: str) -> None:
        self._inner = inner
        self.id = voice_id
        self.kind = KIND

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _FaultyUnit:
    def __init__(self, inner: Unit, fault: str, hang_s: float, released: threading.Event) -> None:
        self._inner = inner
        self._fault = fault
        self._hang_s = hang_s
        self._released = released

    def run(self) -> list[EngineEvent]:
        if self._fault == "FAULT_RAISE":
            raise InjectedFault("injected: the model raised (with /secret/path/model.onnx in its message)")
        if self._fault == "FAULT_DIE":
            raise WorkerDeath("injected: the worker dies")
        self._released.wait(self._hang_s)
        return self._inner.run()

    def settle(self, gone: Sequence[bool], failed: bool) -> None:
        self._inner.settle(gone, failed)


class FaultyBackend:
    """Wraps a real backend; units of streams whose text names a trigger get that fault."""

    kind = KIND

    def __init__(self, inner: Any, hang_s: float = 5.0) -> None:
        self._inner = inner
        self.hang_s = hang_s
        self.released = threading.Event()
        """Set it to end every hang at once."""
        self._faults: dict[str, str] = {}

    def load(self, source: str, voice_id: str | None = None, threads: int = 0) -> Any:
        """The wrapped backend's voice at ``source``, served through the faults."""
        inner = self._inner.load(source, voice_id, threads)
        return FaultyVoice(inner, inner.id)

    def bundled(self, threads: int = 0) -> None:
        return None

    def open_stream(self, stream_id: str, voice: Any, params: SynthesisParams, settings: StreamSettings) -> Any:
        return self._inner.open_stream(stream_id, voice, params, settings)

    def plan(self, state: Any, work: Any) -> Plan | None:
        for segment in work.pending:
            text = segment[1] if isinstance(segment, tuple) else getattr(segment, "text", "")
            for trigger in TRIGGERS:
                if trigger in text:
                    self._faults.setdefault(state.stream_id, trigger)
        return self._inner.plan(state, work)

    def prepare(self, plan: Plan, members: Sequence[tuple[Any, Any]]) -> Unit:
        unit = self._inner.prepare(plan, members)
        fault = self._faults.pop(members[0][0].stream_id, None)
        return unit if fault is None else _FaultyUnit(unit, fault, self.hang_s, self.released)

    def release(self, state: Any) -> None:
        self._inner.release(state)


def faulty_registry(registry: VoiceRegistry, hang_s: float = 5.0) -> tuple[VoiceRegistry, FaultyBackend]:
    """A registry serving the bundled voice as is (the default) and through the fault wrapper
    (id ``faulty``)."""
    bundled = registry.get(None)
    faulty = VoiceRegistry()
    faulty.add(bundled)
    backend = FaultyBackend(registry.backend(bundled.kind), hang_s)
    faulty.add_backend(KIND, backend)
    faulty.add(FaultyVoice(bundled, "faulty"))  # type: ignore[arg-type]
    return faulty, backend

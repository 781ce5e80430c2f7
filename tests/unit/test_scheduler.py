"""The scheduler's rules, on streams whose backend is a table of plans: lanes, holds, grouping, order."""

from __future__ import annotations

from collections import deque

from streamvox.engine.api import Plan
from streamvox.engine.scheduler import DeadlineScheduler, EngineStream

STEP = Plan("step", lane="t2s", group="t2s")
START = Plan("start", lane="t2s")
CHUNK = Plan("chunk")


class _State:
    stream_id = "s"

    def in_progress(self) -> bool:
        return True


class _Backend:
    """Plans come from a dict: stream id -> plan."""

    def __init__(self, plans: dict[str, Plan | None]) -> None:
        self.plans = plans

    def plan(self, state: object, work: object) -> Plan | None:
        return self.plans[work.id]  # type: ignore[attr-defined]


class _Voice:
    sample_rate = 1000


def _stream(name: str, backend: _Backend, arrival: int) -> EngineStream:
    return EngineStream(name, _Voice(), backend, _State(), print, arrival, deque())  # type: ignore[arg-type]


def test_a_busy_lane_keeps_its_units_waiting_and_others_run() -> None:
    backend = _Backend({"a": STEP, "b": START, "c": CHUNK})
    streams = [_stream(n, backend, i) for i, n in enumerate("abc")]
    scheduler = DeadlineScheduler()
    ready, _ = scheduler.runnable(streams, 0.0, set())
    assert [s.id for s in ready] == ["a", "b", "c"]
    ready, _ = scheduler.runnable(streams, 0.0, {"t2s"})
    assert [s.id for s in ready] == ["c"]


def test_held_busy_and_waiting_streams_do_not_run() -> None:
    backend = _Backend({"a": CHUNK, "b": CHUNK, "c": None})
    a, b, c = (_stream(n, backend, i) for i, n in enumerate("abc"))
    a.held, b.busy = True, True
    assert DeadlineScheduler().runnable([a, b, c], 0.0, set())[0] == []


def test_streams_whose_plans_share_a_group_are_batched_with_the_lead() -> None:
    backend = _Backend({"a": STEP, "b": CHUNK, "c": STEP, "d": STEP})
    a, b, c, d = (_stream(n, backend, i) for i, n in enumerate("abcd"))
    d.busy = True
    scheduler = DeadlineScheduler()
    ready, _ = scheduler.runnable([a, b, c, d], 0.0, set())
    assert scheduler.group(c, STEP, ready, set()) == [c, a]
    assert scheduler.group(b, CHUNK, ready, set()) == [b]


def test_the_lead_limit_defers_a_stream_until_its_listener_catches_up() -> None:
    backend = _Backend({"a": CHUNK})
    a = _stream("a", backend, 0)
    a.playback_start, a.samples_out = 100.0, 5000  # dry at 105 s
    scheduler = DeadlineScheduler(max_lead_s=2.0)
    assert scheduler.runnable([a], 102.5, set()) == ([], 103.0)
    assert scheduler.runnable([a], 103.0, set()) == ([a], None)

"""Summaries of the server's unit trace: a load step's arrival burst against the rest, and a run's
units by action.

``bench load`` starts its listeners over ``--ramp`` seconds, and each one's first reply begins as
it arrives, so the first seconds of a step hold every stream's most expensive units (its first
window, the next span's encoder) at once.  Split there, the trace (:mod:`streamvox.engine.unit_trace`)
says whether a step failed for lack of CPU in the burst or by the order of its work: how busy the
workers were, how busy the whole server was (its CPU read every fraction of a second beside the
trace), how much audio the workers made per wall second and at what CPU cost, and when the late
units came.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streamvox.engine.unit_trace import UnitRecord

SETTLE_S = 1.0
"""The burst lasts this long past the last arrival: its streams' next spans start then."""
FULL_SHARE = 0.9
"""A server above this share of all the machine's cores is full: nothing more could run."""


def phase_summary(
    records: Sequence[UnitRecord],
    start: float,
    end: float,
    workers: int,
    cpu_timeline: Sequence[Sequence[float]] | None = None,
    cores: int = 1,
) -> dict[str, Any]:
    """The units dispatched in ``[start, end)``: the share of ``workers``' time they ran, audio made
    per wall second, worker-thread CPU and run time per audio second, late and first-audio units.
    With ``cpu_timeline``, the server's CPU samples that fall in the phase (``[time, percent over
    the interval ending then]``), their mean and the share of them with the server full
    (:data:`FULL_SHARE` of ``cores``)."""
    chosen = [r for r in records if start <= r.started < end]
    wall = max(end - start, 1e-9)
    running = sum(max(0.0, min(r.started + r.run_s, end) - r.started) for r in chosen)
    audio = sum(r.audio_s for r in chosen)
    cpu = [percent for _, percent in cpu_timeline or ()]
    return {
        "seconds": end - start,
        "units": len(chosen),
        "workers_busy": running / (workers * wall),
        "audio_s_per_s": audio / wall,
        "cpu_ms_per_audio_s": 1000 * sum(r.cpu_s for r in chosen) / audio if audio else None,
        "run_ms_per_audio_s": 1000 * sum(r.run_s for r in chosen) / audio if audio else None,
        "late_units": sum(1 for r in chosen if r.late_s > 0),
        "first_audio_units": sum(1 for r in chosen if r.first_audio),
        "server_cpu_percent": sum(cpu) / len(cpu) if cpu else None,
        "server_full_share": sum(1 for p in cpu if p >= 100 * FULL_SHARE * cores) / len(cpu) if cpu else None,
    }


def load_phases(
    records: Sequence[UnitRecord],
    start: float,
    end: float,
    ramp_s: float,
    workers: int,
    cpu_timeline: Sequence[Sequence[float]] | None = None,
    cores: int = 1,
) -> dict[str, dict[str, Any]]:
    """A step from ``start`` to ``end`` split into ``arrivals`` (the ramp and :data:`SETTLE_S`
    after it) and ``after`` (the rest; absent when the step is no longer than the burst).
    ``cpu_timeline``: the server's CPU over the step, ``[seconds since start, percent over the
    interval ending then]``."""
    burst_end = min(end, start + ramp_s + SETTLE_S)
    split = burst_end - start
    early = None if cpu_timeline is None else [s for s in cpu_timeline if s[0] <= split]
    late = None if cpu_timeline is None else [s for s in cpu_timeline if s[0] > split]
    phases = {"arrivals": phase_summary(records, start, burst_end, workers, early, cores)}
    if end > burst_end:
        phases["after"] = phase_summary(records, burst_end, end, workers, late, cores)
    return phases


def describe_phases(streams: int, phases: dict[str, dict[str, Any]]) -> str:
    """One line for a step's table."""

    def part(name: str, p: dict[str, Any]) -> str:
        cpu = "" if p["cpu_ms_per_audio_s"] is None else f" at {p['cpu_ms_per_audio_s']:.1f} ms worker CPU each"
        server = ""
        if p.get("server_cpu_percent") is not None:
            server = f", server CPU {p['server_cpu_percent']:.0f} % (full {100 * p['server_full_share']:.0f} % of it)"
        return (
            f"{name} ({p['seconds']:.1f} s): workers busy {100 * p['workers_busy']:.0f} %{server}, "
            f"{p['audio_s_per_s']:.1f} audio s per s{cpu}, {p['late_units']} late"
        )

    return f"  N={streams}: " + "; ".join(part(name, p) for name, p in phases.items())


def action_summary(records: Sequence[UnitRecord]) -> dict[str, dict[str, Any]]:
    """Per action (``window``; ``start``, ``step``, ``chunk``, ...): how many units, the streams a
    unit advanced on average, their run and worker-thread CPU time summed (ms), the audio they made
    and how many came late."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        a = out.setdefault(r.action, {"units": 0, "batch_mean": 0.0, "run_ms": 0.0, "cpu_ms": 0.0, "audio_s": 0.0,
                                      "late_units": 0})  # fmt: skip
        a["units"] += 1
        a["batch_mean"] += r.batch
        a["run_ms"] += 1000 * r.run_s
        a["cpu_ms"] += 1000 * r.cpu_s
        a["audio_s"] += r.audio_s
        a["late_units"] += r.late_s > 0
    for a in out.values():
        a["batch_mean"] /= a["units"]
    return out


def describe_actions(summary: dict[str, dict[str, Any]]) -> str:
    """``action Nx (batch B) T ms[, L late]`` for each action, on one line."""

    def part(name: str, a: dict[str, Any]) -> str:
        late = f", {a['late_units']} late" if a["late_units"] else ""
        return f"{name} {a['units']}x (batch {a['batch_mean']:.1f}) {a['run_ms']:.0f} ms{late}"

    return "; ".join(part(name, a) for name, a in summary.items())

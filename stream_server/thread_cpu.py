"""CPU time of the server's threads by role, read from ``/proc`` (Linux) when metrics are scraped.

The roles are the parts of the data flow: the event loop (protocols, codecs,
sockets), the engine thread (scheduling), the engine's workers (the models'
own threads, running units), the model runtimes' thread pools (threads no
Python code started: onnxruntime's and torch's intra-op pools; in a Ray Serve
replica, Ray's own threads too), and any other Python thread.  ``streamvox
bench load`` reads them around each step to say where a second of served
audio costs its CPU; an operator sees the same split in ``/metrics``.
Counts cover the threads alive at the scrape (a replaced worker's time leaves
with it).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.metrics_core import CounterMetricFamily, Metric
from streamvox.engine.core import ENGINE_THREAD_NAME, WORKER_THREAD_PREFIX

ROLES = ("workers", "runtime_pools", "event_loop", "engine", "other")
_TASKS = Path("/proc/self/task")


def role_of(name: str | None, native_id: int, loop_thread: int | None) -> str:
    """The role of thread ``native_id`` (named ``name`` if Python started it)."""
    if native_id == loop_thread:
        return "event_loop"
    if name is None:
        return "runtime_pools"
    if name == ENGINE_THREAD_NAME:
        return "engine"
    if name.startswith(WORKER_THREAD_PREFIX):
        return "workers"
    return "other"


def cpu_seconds_by_role(loop_thread: int | None) -> dict[str, float] | None:
    """User + system CPU seconds of this process's live threads, summed by role; ``None`` where
    ``/proc`` has no per-thread times (not Linux)."""
    if not _TASKS.is_dir():
        return None
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    tick = os.sysconf("SC_CLK_TCK")
    totals = dict.fromkeys(ROLES, 0.0)
    for task in _TASKS.iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended while we looked
        # Fields after the command name (which may hold spaces) start at "state"; utime and
        # stime are the 14th and 15th fields of the line, the 12th and 13th after it.
        fields = stat.rsplit(")", 1)[1].split()
        native_id = int(task.name)
        totals[role_of(names.get(native_id), native_id, loop_thread)] += (int(fields[11]) + int(fields[12])) / tick
    return totals


class ThreadCpuCollector:
    """A prometheus collector: ``streamvox_cpu_seconds_total{role}``.  Thread-safe (reads only)."""

    def __init__(self) -> None:
        self.loop_thread: int | None = None
        """The event loop's thread (native id), set once the loop runs (:meth:`mark_event_loop`)."""

    def mark_event_loop(self) -> None:
        """Call on the event loop's thread: its time is counted as the event loop's."""
        self.loop_thread = threading.get_native_id()

    def collect(self) -> Iterator[Metric]:
        totals = cpu_seconds_by_role(self.loop_thread)
        if totals is None:
            return
        family = CounterMetricFamily(
            "streamvox_cpu_seconds",
            "CPU seconds of the server's live threads by role (event loop, engine thread, engine "
            "workers, the model runtimes' own thread pools, other)",
            labels=["role"],
        )
        for role, seconds in totals.items():
            family.add_metric([role], seconds)
        yield family

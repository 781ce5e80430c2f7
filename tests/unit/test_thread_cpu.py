"""CPU seconds by thread role, read from /proc for /metrics and bench load."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from streamvox.stream_server.thread_cpu import ROLES, ThreadCpuCollector, cpu_seconds_by_role, role_of

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread times come from /proc")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_roles_follow_the_thread_names() -> None:
    assert role_of("MainThread", 10, loop_thread=10) == "event_loop"
    assert role_of("streamvox-engine", 11, loop_thread=10) == "engine"
    assert role_of("streamvox-worker_0", 12, loop_thread=10) == "workers"
    assert role_of(None, 13, loop_thread=10) == "runtime_pools"  # no Python thread: a runtime's pool
    assert role_of("asyncio_0", 14, loop_thread=None) == "other"


def test_a_worker_threads_cpu_is_counted_as_the_workers() -> None:
    loop = threading.get_native_id()
    before = cpu_seconds_by_role(loop)
    assert before is not None and set(before) == set(ROLES)
    burnt, measured = threading.Event(), threading.Event()

    def work() -> None:
        _burn(0.3)
        burnt.set()
        measured.wait(10)  # stay alive until measured: only live threads are counted

    worker = threading.Thread(target=work, name="streamvox-worker_9")
    worker.start()
    _burn(0.2)  # this thread plays the event loop
    assert burnt.wait(10)
    after = cpu_seconds_by_role(loop)
    measured.set()
    worker.join()
    assert after is not None
    assert after["workers"] - before["workers"] >= 0.25
    assert after["event_loop"] - before["event_loop"] >= 0.15
    assert after["engine"] == before["engine"] == 0.0  # no engine thread here


def test_the_collector_exposes_every_role() -> None:
    registry = CollectorRegistry()
    collector = ThreadCpuCollector()
    collector.mark_event_loop()
    registry.register(collector)
    _burn(0.1)
    body = generate_latest(registry).decode()
    for role in ROLES:
        assert f'streamvox_cpu_seconds_total{{role="{role}"}}' in body
    loop_line = next(
        line for line in body.splitlines() if line.startswith('streamvox_cpu_seconds_total{role="event_loop"}')
    )
    assert float(loop_line.rsplit(" ", 1)[1]) > 0

"""What every benchmark shares: a free loopback port, a server in a child process, percentiles,
playback stalls, a call's and a process's CPU time."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def thread_cpu_s(run: Callable[[], object]) -> float:
    """CPU seconds the calling thread spends in ``run()``: not the time other processes of a shared
    machine take from it, nor that of threads ``run`` starts."""
    start = time.thread_time()
    run()
    return time.thread_time() - start


def process_cpu_s(process: Any) -> float:
    """User + system CPU seconds a ``psutil.Process`` has used so far, all its threads counted
    (those that have ended too)."""
    times = process.cpu_times()
    return times.user + times.system


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def playback_stall_ms(arrivals: Sequence[tuple[float, int]], sample_rate: int, prebuffer_s: float = 0.0) -> float:
    """Playback stall in ms for a listener that starts playing ``prebuffer_s`` after the first
    packet: each packet (arrival time in s, samples) that arrives after the audio before it has
    played out adds the wait."""
    if not arrivals:
        return 0.0
    clock = arrivals[0][0] + prebuffer_s
    stalled = 0.0
    for at, samples in arrivals:
        if at > clock:
            stalled += at - clock
            clock = at
        clock += samples / sample_rate
    return stalled * 1000


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    """dB of ``reference``'s energy over that of ``other - reference`` (infinite when equal)."""
    reference = np.asarray(reference, np.float64)
    error = float(np.sum((np.asarray(other, np.float64) - reference) ** 2))
    return 10 * float(np.log10(float(np.sum(reference**2)) / error)) if error else float("inf")


def free_port() -> int:
    """A loopback TCP port nobody listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(
    proc: subprocess.Popen[bytes], port: int, timeout_s: float = 120.0, tls: ssl.SSLContext | None = None
) -> None:
    """Return once ``/healthz`` answers (over HTTPS with ``tls``, a client context that trusts the
    server); raise if the process exits or the time runs out."""
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1, context=tls):
                return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("server exited during start-up") from None
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start within {timeout_s:.0f} s")


def start_server(
    threads: int,
    max_lead: float = 0.0,
    max_sessions: int = 64,
    workers: int | None = 0,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], int]:
    """``streamvox serve`` in a child process on a free port; returns it once /healthz answers.

    ``env`` replaces the child's environment, ``workers=None`` leaves out ``--workers``
    (``scripts/ab.py`` runs older checkouts, which may not know that flag) and ``extra``
    is appended to the command line (voices, say)."""
    port = free_port()
    options = [] if workers is None else ["--workers", str(workers)]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamvox.stream_server.cli",
            "--log-level",
            "WARNING",
            "serve",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--max-lead",
            str(max_lead),  # 0 (latency bench): how fast the server can go, not how it paces a listener
            "--max-sessions",
            str(max_sessions),
            *options,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        env=env,
    )
    wait_healthy(proc, port)
    return proc, port

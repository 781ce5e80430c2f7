"""``streamvox bench soak``: N LLM-paced listeners for M minutes, sampled over time, with slopes.

The listeners are ``bench load``'s (real-time playback after a jitter buffer,
playback reports, the next reply when the last one has been heard).  Every
``--sample-every`` seconds the run records the server's RSS and open file
descriptors and, for the interval just past, underruns and the p95 server
TTFA; at the end it fits a least-squares slope to each (per minute), so a
leak shows as a positive RSS or fd slope and a slow decay as a TTFA slope.

``--streams`` defaults to 80 % of the largest passing N, measured first with
``bench load``'s steps.  ``--fuzz`` mixes hostile clients in: a client that
every second opens a socket and sends garbage, oversize or half messages, or
starts speaking and vanishes without a close.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamvox.bench.harness import percentile, start_server
from streamvox.bench.load import FIND_MAX_STEPS, ClientStats, LoadProfile, client, passes, run_load

FIND_MAX_SECONDS = 20.0
TTFA_BOUND_MS = 250.0


@dataclass
class Sample:
    minute: float
    rss_mb: float
    fds: int
    underruns: int
    """In the interval that ended here."""
    ttfa_ms_p95: float | None
    contexts: int
    fuzz_sockets: int


@dataclass
class FuzzStats:
    sockets: int = 0
    unexpected: list[str] = field(default_factory=list)


def _process_figures(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_minute(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs`` (minutes); ``None`` with fewer than two points."""
    points = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else None


async def _hostile_client(url: str, until: float, stats: FuzzStats) -> None:
    """One hostile socket a second, each a different kind of trouble."""
    import websockets

    rng = random.Random(17)
    attacks = [
        lambda: [os.urandom(rng.randint(1, 2048))],
        lambda: ["{" * rng.randint(1, 30_000)],
        lambda: ['{"type": "text", "text": "\\ud800", "context_id": "x"}'],
        lambda: ['{"type": "cancel", "context_id": "nope"}', '{"type": "report", "played_ms": "soon"}'],
        lambda: ['{"type": "text", "text": "Gone before the end of this. ", "context_id": "v"}', '{"type": "end"}'],
        lambda: ["x" * 100_000],
    ]
    while time.monotonic() < until:
        frames = rng.choice(attacks)()
        stats.sockets += 1
        try:
            ws = await websockets.connect(f"{url}?protocol=2", max_size=None, open_timeout=30)
            try:
                await asyncio.wait_for(ws.recv(), 30)
                for frame in frames:
                    await ws.send(frame)
                await asyncio.wait_for(ws.recv(), 2)
            except (websockets.ConnectionClosed, TimeoutError):
                pass
            finally:
                ws.transport.abort()  # vanish without a close
        except (OSError, websockets.InvalidHandshake, TimeoutError) as exc:
            stats.unexpected.append(type(exc).__name__)
        await asyncio.sleep(1.0)


async def _soak(url: str, pid: int, streams: int, minutes: float, every_s: float, profile: LoadProfile,
                fuzz: bool) -> tuple[list[Sample], list[ClientStats], FuzzStats]:  # fmt: skip
    start = time.monotonic()
    until = start + 60 * minutes
    stats = [ClientStats() for _ in range(streams)]
    fuzz_stats = FuzzStats()

    async def arrive(i: int) -> None:
        await asyncio.sleep(i / streams * profile.ramp_s)
        await client(url, i, until, profile, stats[i])

    samples: list[Sample] = []

    async def sampler() -> None:
        seen_ttfa = [0] * streams
        seen_underruns = 0
        seen_contexts = 0
        while time.monotonic() < until:
            await asyncio.sleep(every_s)
            fresh = [t for i, s in enumerate(stats) for t in s.ttfa_ms[seen_ttfa[i] :]]
            seen_ttfa = [len(s.ttfa_ms) for s in stats]
            underruns = sum(s.underruns for s in stats)
            contexts = sum(s.contexts for s in stats)
            rss, fds = _process_figures(pid)
            samples.append(Sample(round((time.monotonic() - start) / 60, 3), round(rss, 1), fds,
                                  underruns - seen_underruns, percentile(fresh, 95) if fresh else None,
                                  contexts - seen_contexts, fuzz_stats.sockets))  # fmt: skip
            seen_underruns, seen_contexts = underruns, contexts

    tasks = [arrive(i) for i in range(streams)] + [sampler()]
    if fuzz:
        tasks.append(_hostile_client(url, until, fuzz_stats))
    await asyncio.gather(*tasks)
    return samples, stats, fuzz_stats


def find_max(url: str, pid: int, profile: LoadProfile) -> int:
    """The largest N whose ``bench load`` step passes (no underruns, p95 TTFA within the bound)."""
    best = 0
    for n in FIND_MAX_STEPS:
        if not passes(run_load(url, n, FIND_MAX_SECONDS, profile, pid), TTFA_BOUND_MS):
            break
        best = n
    return best


def _plot(samples: list[Sample], path: str, title: str) -> None:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.minute for s in samples]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(minutes, [s.rss_mb for s in samples], color="tab:blue", label="RSS (MB)")
    ax1.set_xlabel("minutes")
    ax1.set_ylabel("server RSS (MB)")
    ax1b = ax1.twinx()
    ax1b.plot(minutes, [s.fds for s in samples], color="tab:gray", linestyle="--", label="open fds")
    ax1b.set_ylabel("open file descriptors")
    ax1.set_title("memory and descriptors")
    ax2.plot(minutes, [s.ttfa_ms_p95 or 0 for s in samples], color="tab:green", label="p95 TTFA (ms)")
    ax2.bar(minutes, [s.underruns for s in samples], width=0.1, color="tab:orange", label="underruns")
    ax2.axhline(TTFA_BOUND_MS, color="tab:red", linestyle=":", linewidth=1)
    ax2.set_xlabel("minutes")
    ax2.set_title("p95 server TTFA per interval, underruns")
    ax2.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_soak_bench(args: argparse.Namespace) -> int:
    profile = LoadProfile(words_per_s=args.words_per_s, ramp_s=args.ramp, pause_s=args.pause)
    proc, port = start_server(args.threads, max_lead=args.max_lead, max_sessions=256, workers=args.workers)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    try:
        measured_max = None
        streams = args.streams
        if streams is None:
            measured_max = find_max(url, proc.pid, profile)
            streams = max(1, int(0.8 * measured_max))
        samples, stats, fuzz = asyncio.run(
            _soak(url, proc.pid, streams, args.minutes, args.sample_every, profile, args.fuzz)
        )
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    minutes = [s.minute for s in samples]
    ttfa = [t for s in stats for t in s.ttfa_ms]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "minutes": args.minutes,
        "streams": streams,
        "measured_max": measured_max,
        "fuzz": args.fuzz,
        "contexts": sum(s.contexts for s in stats),
        "audio_s": round(sum(s.audio_s for s in stats), 1),
        "underruns": sum(s.underruns for s in stats),
        "ttfa_ms_p95": percentile(ttfa, 95) if ttfa else None,
        "client_errors": sorted({e for s in stats for e in s.errors}),
        "fuzz_sockets": fuzz.sockets,
        "fuzz_unexpected": fuzz.unexpected,
        "server_alive": alive,
        "rss_mb": {"first": samples[0].rss_mb, "last": samples[-1].rss_mb, "max": max(s.rss_mb for s in samples)}
        if samples else None,
        "fds": {"first": samples[0].fds, "last": samples[-1].fds, "max": max(s.fds for s in samples)}
        if samples else None,
        "slopes_per_minute": {
            "rss_mb": slope_per_minute(minutes, [s.rss_mb for s in samples]),
            "fds": slope_per_minute(minutes, [float(s.fds) for s in samples]),
            "ttfa_ms_p95": slope_per_minute(minutes, [s.ttfa_ms_p95 for s in samples]),  # type: ignore[misc]
            "underruns": slope_per_minute(minutes, [float(s.underruns) for s in samples]),
        },
        "samples": [vars(s) for s in samples],
    }  # fmt: skip
    if args.plot:
        title = f"bench soak: {streams} streams, {args.minutes:g} min{', with hostile clients' if args.fuzz else ''}"
        _plot(samples, args.plot, title)
    if args.json:
        print(json.dumps(result))
    else:
        print(_table(result))
    return 0


def _table(result: dict[str, Any]) -> str:
    slopes = result["slopes_per_minute"]

    def fmt(value: float | None, unit: str) -> str:
        return "n/a" if value is None else f"{value:+.3f} {unit}/min"

    lines = [
        f"soak {result['minutes']:g} min, {result['streams']} streams"
        + (f" (80 % of the measured max {result['measured_max']})" if result["measured_max"] is not None else "")
        + (f", hostile clients: {result['fuzz_sockets']} sockets" if result["fuzz"] else ""),
        f"contexts {result['contexts']}, audio {result['audio_s']} s, underruns {result['underruns']}, "
        f"p95 TTFA {result['ttfa_ms_p95']:.0f} ms, client errors {result['client_errors'] or 'none'}, "
        f"server alive: {result['server_alive']}",
        f"RSS MB first/last/max {result['rss_mb']['first']}/{result['rss_mb']['last']}/{result['rss_mb']['max']}, "
        f"fds first/last/max {result['fds']['first']}/{result['fds']['last']}/{result['fds']['max']}",
        f"slopes: RSS {fmt(slopes['rss_mb'], 'MB')}, fds {fmt(slopes['fds'], 'fd')}, "
        f"p95 TTFA {fmt(slopes['ttfa_ms_p95'], 'ms')}, underruns {fmt(slopes['underruns'], '')}",
    ]
    return "\n".join(lines)

"""``streamvox bench load``: many LLM-paced listeners at once, each simulating real-time playback.

Each simulated client sends text at LLM pace (words/s), plays what arrives in
real time after a short jitter buffer, reports its playback position to the
server, and starts its next utterance when the last one has finished playing
(plus ``--pause`` seconds, the user's turn in a conversation; 0 by default, so
every listener hears speech all the time), until ``--seconds`` have passed.
Clients connect spread evenly over ``--ramp`` seconds, as users arrive; with
``--ramp 0`` they all start in the same instant.  It counts underruns (the buffer ran dry before
the context was done) and records the server's TTFA for every utterance.

In the same run the peer baseline serves the same utterances the way the
popular servers do: ``piper-tts`` on the same voice, one request at a time
(each client's first audio waits for every request queued before it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from streamvox.bench.harness import percentile, process_cpu_s, start_server
from streamvox.bench.trace_summary import FULL_SHARE, SETTLE_S, describe_phases, load_phases
from streamvox.engine.core import EngineConfig
from streamvox.engine.unit_trace import read_unit_trace
from streamvox.stream_server.thread_cpu import ROLES as CPU_ROLES

UTTERANCES = [
    "Sure, I can help with that. The quickest way is to restart the router, wait a minute, and then reconnect.",
    "Here is a short summary of the meeting: the budget was approved, the launch moves to March, and hiring continues.",
    "It looks like rain this afternoon, so you may want an umbrella. Tomorrow should be dry and a little warmer.",
    "Your order shipped this morning and should arrive on Thursday. I will send you the tracking link by email.",
]
FIND_MAX_STEPS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56, 60, 64, 72, 80)
"""Stream counts ``--find-max`` steps through (4 apart near the limit: N_max ÷ limit to ~0.1)."""
PREBUFFER_S = 0.1
LEAD_WORK_S = EngineConfig().lead_work_s
REPORT_EVERY_S = 0.25
CPU_SAMPLE_S = 0.25
"""With ``--unit-trace``: how often the server's CPU is read during a step."""


@dataclass(frozen=True)
class LoadProfile:
    """How the simulated listeners behave."""

    words_per_s: float = 15.0
    """LLM text pace per stream."""
    ramp_s: float = 2.0
    """Client ``i`` of ``n`` connects at ``i / n * ramp_s``."""
    pause_s: float = 0.0
    """Silence between the end of one reply's playback and the next reply's text."""


@dataclass
class ClientStats:
    ttfa_ms: list[float] = field(default_factory=list)
    underruns: int = 0
    underrun_s: float = 0.0
    audio_s: float = 0.0
    contexts: int = 0
    errors: list[str] = field(default_factory=list)
    timeline: list[tuple[int, float | None, int]] = field(default_factory=list)
    """Per utterance: (turn, TTFA ms, underruns)."""
    client_ttfa_ms: list[float] = field(default_factory=list)
    """Per utterance: first word sent to first audio received, at the client (network and any
    proxy included)."""
    packet_gaps_ms: list[float] = field(default_factory=list)
    """Time between consecutive audio packets of an utterance, at the client."""
    present_s: float = 0.0
    """From connecting to the end of the listener's last turn (its playback and pause): the time
    its speech share is taken over, so a listener that arrived late in the ramp counts as one."""


async def client(url: str, index: int, until: float, profile: LoadProfile, stats: ClientStats) -> None:
    """One simulated listener: utterance after utterance until ``until``, counting into ``stats``."""
    arrived = time.monotonic()
    try:
        await _turns(url, index, until, profile, stats)
    finally:
        stats.present_s = time.monotonic() - arrived


async def _turns(url: str, index: int, until: float, profile: LoadProfile, stats: ClientStats) -> None:
    """The listener's turns over one connection (see :func:`client`)."""
    import websockets

    words_per_s = profile.words_per_s

    async with websockets.connect(url, max_size=None) as ws:
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            stats.errors.append(ready.get("code", "no ready"))
            return
        frame_s = ready["format"]["frame_ms"] / 1000
        n = 0
        while time.monotonic() < until:
            text = UTTERANCES[(index + n) % len(UTTERANCES)]
            cid = f"c{n}"
            n += 1
            received = 0.0
            underruns_before = stats.underruns
            playback_start: float | None = None
            done = False
            last_report = 0.0

            async def sender(text: str = text, cid: str = cid) -> None:
                for word in text.split(" "):
                    await ws.send(json.dumps({"type": "text", "text": word + " ", "context_id": cid}))
                    await asyncio.sleep(1 / words_per_s)
                await ws.send(json.dumps({"type": "end", "context_id": cid}))

            first_word_at = time.monotonic()
            last_packet_at: float | None = None
            task = asyncio.create_task(sender())
            while not done:
                message = await ws.recv()
                now = time.monotonic()
                if isinstance(message, bytes):
                    if last_packet_at is not None:
                        stats.packet_gaps_ms.append(1000 * (now - last_packet_at))
                    last_packet_at = now
                    if playback_start is None:
                        stats.client_ttfa_ms.append(1000 * (now - first_word_at))
                        playback_start = now + PREBUFFER_S
                    elif now - playback_start > received:  # the listener ran dry before this packet
                        stall = now - playback_start - received
                        stats.underruns += 1
                        stats.underrun_s += stall
                        playback_start += stall
                    received += frame_s
                    if now - last_report >= REPORT_EVERY_S:
                        last_report = now
                        played = max(0.0, min(received, now - playback_start)) * 1000
                        await ws.send(json.dumps({"type": "report", "context_id": cid, "played_ms": played}))
                    continue
                event = json.loads(message)
                if event["type"] == "done":
                    done = True
                    stats.contexts += 1
                    stats.audio_s += event["seconds"]
                    if event["ttfa_ms"] is not None:
                        stats.ttfa_ms.append(event["ttfa_ms"])
                    stats.timeline.append((n - 1, event["ttfa_ms"], stats.underruns - underruns_before))
                elif event["type"] == "error":
                    stats.errors.append(event["code"])
                    if event.get("fatal"):
                        return
            await task
            if playback_start is not None:  # listen to the end before the next turn
                await asyncio.sleep(max(0.0, playback_start + received - time.monotonic()))
            await asyncio.sleep(profile.pause_s)


async def _load(url: str, streams: int, seconds: float, profile: LoadProfile) -> list[ClientStats]:
    start = time.monotonic()
    until = start + seconds
    stats = [ClientStats() for _ in range(streams)]

    async def arrive(i: int) -> None:
        await asyncio.sleep(i / streams * profile.ramp_s)
        await client(url, i, until, profile, stats[i])

    await asyncio.gather(*(arrive(i) for i in range(streams)))
    return stats


def _cpu_s(processes: list[Any]) -> float:
    import psutil

    total = 0.0
    for proc in processes:
        try:
            total += process_cpu_s(proc)
        except psutil.NoSuchProcess:
            continue
    return total


LATENESS = (
    "streamvox_engine_late_units",
    "streamvox_engine_late_seconds",
    "streamvox_engine_late_units_behind_lead_work",
)
"""The engine's own count of units that came too late for their listener (``/metrics``)."""


def server_counters(ws_url: str) -> dict[str, float] | None:
    """The server's late-unit counters and CPU seconds by thread role, read from ``/metrics``
    next to ``ws_url``: names as in :data:`LATENESS`, roles as ``cpu:<role>``.  ``None`` when the
    late units cannot be read (a server that wants a key for it, or several replicas' labelled
    series); the roles are absent where the server cannot read per-thread times."""
    base = ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).split("/v1/", 1)[0]
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in LATENESS:
            values[name] = float(value)
        elif name.startswith('streamvox_cpu_seconds_total{role="'):
            values["cpu:" + name.split('"')[1]] = float(value)
    return values if all(name in values for name in LATENESS) else None


def cpu_by_role(
    before: dict[str, float] | None, after: dict[str, float] | None, audio_s: float
) -> dict[str, float] | None:
    """Server CPU milliseconds per audio second by thread role between two :func:`server_counters`
    reads; ``None`` where either read lacks the roles or no audio was made."""
    keys = [f"cpu:{role}" for role in CPU_ROLES]
    if not before or not after or not audio_s or not all(k in before and k in after for k in keys):
        return None
    return {role: 1000 * (after[k] - before[k]) / audio_s for role, k in zip(CPU_ROLES, keys, strict=True)}


def run_load(
    url: str,
    streams: int,
    seconds: float,
    profile: LoadProfile,
    server_pid: int | None,
    tree: bool = False,
    cpu_every_s: float | None = None,
) -> dict[str, Any]:
    """One step of ``streams`` listeners for ``seconds``; with ``server_pid``, the server's CPU
    (``tree``: the process and all its descendants, as for a local Ray instance's processes), and
    with ``cpu_every_s`` too, its CPU over each such interval of the step
    (``server_cpu_timeline``: ``[seconds into the step, percent]`` at each interval's end)."""
    import psutil

    proc = psutil.Process(server_pid) if server_pid else None
    processes = ([proc, *proc.children(recursive=True)] if tree else [proc]) if proc else []
    cpu_before = _cpu_s(processes)
    me = psutil.Process()
    own_before = process_cpu_s(me)
    counters_before = server_counters(url)
    started = time.monotonic()
    sampler = _CpuSampler(processes, cpu_every_s, started, cpu_before) if processes and cpu_every_s else None
    stats = asyncio.run(_load(url, streams, seconds, profile))
    ended = time.monotonic()
    timeline = sampler.stop() if sampler is not None else None
    wall = ended - started
    counters_after = server_counters(url) if counters_before is not None else None
    own_cpu = process_cpu_s(me) - own_before
    ttfa = [t for s in stats for t in s.ttfa_ms]
    client_ttfa = [t for s in stats for t in s.client_ttfa_ms]
    gaps = [g for s in stats for g in s.packet_gaps_ms]
    row: dict[str, Any] = {
        "streams": streams,
        "contexts": sum(s.contexts for s in stats),
        "ttfa_ms_p50": percentile(ttfa, 50) if ttfa else None,
        "ttfa_ms_p95": percentile(ttfa, 95) if ttfa else None,
        "ttfa_ms_all": ttfa,
        "client_ttfa_ms_p50": percentile(client_ttfa, 50) if client_ttfa else None,
        "client_ttfa_ms_p95": percentile(client_ttfa, 95) if client_ttfa else None,
        "packet_gap_ms_p50": percentile(gaps, 50) if gaps else None,
        "packet_gap_ms_p95": percentile(gaps, 95) if gaps else None,
        "packet_gap_ms_p99": percentile(gaps, 99) if gaps else None,
        "underruns": sum(s.underruns for s in stats),
        "underrun_ms": 1000 * sum(s.underrun_s for s in stats),
        "streams_with_underruns": sum(1 for s in stats if s.underruns),
        "audio_s": sum(s.audio_s for s in stats),
        "present_s": sum(s.present_s for s in stats),
        "errors": sorted({e for s in stats for e in s.errors}),
        "per_stream": [s.timeline for s in stats],
        "wall_s": wall,
        "started": started,
        "ended": ended,
        # The simulated listeners share the machine with the server: what they cost is not the server's.
        "client_cpu_percent": 100 * own_cpu / wall,
    }
    if counters_before is not None and counters_after is not None:
        change = {name: counters_after[name] - counters_before.get(name, 0.0) for name in counters_after}
        row["server_late_units"] = int(change["streamvox_engine_late_units"])
        row["server_late_s"] = change["streamvox_engine_late_seconds"]
        row["server_late_behind_lead_work"] = int(change["streamvox_engine_late_units_behind_lead_work"])
        if by_role := cpu_by_role(counters_before, counters_after, row["audio_s"]):
            row["server_cpu_ms_per_audio_s_by_role"] = by_role
    if proc:
        cpu = _cpu_s(processes) - cpu_before
        row["server_cpu_percent"] = 100 * cpu / wall
        if timeline is not None:
            row["server_cpu_timeline"] = timeline
        row["server_cpu_s_per_audio_s"] = cpu / row["audio_s"] if row["audio_s"] else None
    return row


class _CpuSampler:
    """Reads the server's CPU seconds every ``every_s`` on a thread of its own while a step runs."""

    def __init__(self, processes: list[Any], every_s: float, started: float, cpu_at_start: float) -> None:
        import threading

        self._processes, self._every_s = processes, every_s
        self._started, self._last = started, (started, cpu_at_start)
        self._timeline: list[list[float]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            now, cpu = time.monotonic(), _cpu_s(self._processes)
            then, cpu_then = self._last
            self._timeline.append([now - self._started, 100 * (cpu - cpu_then) / (now - then)])
            self._last = (now, cpu)

    def stop(self) -> list[list[float]]:
        self._done.set()
        self._thread.join()
        return self._timeline


def raw_single_thread_cpu_per_audio_s(runs: int = 8) -> tuple[float, float]:
    """The physical limit's denominator: CPU seconds the unmodified Piper graph, one thread, spends
    per second of audio on the load texts (one warm-up, then ``runs`` passes), measured now; and
    beside it, passes interleaved, the same graph with its convolutions rewritten as the
    server runs them (a stricter floor)."""
    from streamvox.bench.latency import RawOnnx

    floors = [RawOnnx(" ".join(UTTERANCES), threads=1, lifted=lifted) for lifted in (False, True)]
    for raw in floors:
        raw.run()
        raw.cpu_s = raw.audio_s = 0.0
    for _ in range(runs):
        for raw in floors:
            raw.run()
    return floors[0].cpu_per_audio_s, floors[1].cpu_per_audio_s


def _raw_pass_on_one_core(start: Any, results: Any, runs: int) -> None:
    """One process of :func:`raw_cpu_per_audio_s_all_cores`: warm up, wait for the others, time ``runs``
    passes of the unmodified graph on one thread."""
    from streamvox.bench.latency import RawOnnx

    raw = RawOnnx(" ".join(UTTERANCES), threads=1)
    raw.run()
    raw.cpu_s = raw.audio_s = 0.0
    start.wait()
    for _ in range(runs):
        raw.run()
    results.put(raw.cpu_per_audio_s)


def raw_cpu_per_audio_s_all_cores(cores: int, runs: int = 6) -> float:
    """The unmodified Piper graph's CPU seconds per audio second, one thread each, with ``cores``
    processes running it at once (the mean over them): what the cores give when all are busy, where
    :func:`raw_single_thread_cpu_per_audio_s` runs one alone (shared caches, memory and clock
    make the two differ; on the 2-core VM by 5-6 %)."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(cores), context.Queue()
    workers = [context.Process(target=_raw_pass_on_one_core, args=(start, results, runs)) for _ in range(cores)]
    for worker in workers:
        worker.start()
    rates = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates) / len(rates)


def physical_limit(cores: int, raw_cpu_per_audio_s: float, duty_cycle: float = 1.0) -> float:
    """Streams this machine could keep in real time if nothing but the raw model ran:
    ``cores ÷ raw CPU s per audio s``, divided by the share of time a listener hears speech."""
    return cores / raw_cpu_per_audio_s / duty_cycle


def passes(row: dict[str, Any], ttfa_bound_ms: float) -> bool:
    return (
        row["underruns"] == 0
        and not row["errors"]
        and row["ttfa_ms_p95"] is not None
        and row["ttfa_ms_p95"] <= ttfa_bound_ms
    )


def peer_baseline(streams: int) -> dict[str, Any]:
    """piper-tts, one request at a time: client i waits for the i requests before it."""
    from piper import PiperVoice as PiperTtsVoice
    from streamvox.engine.backends.piper.backend import bundled_voice_path

    voice = PiperTtsVoice.load(bundled_voice_path())
    list(voice.synthesize(UTTERANCES[0]))  # warm-up
    queue_wait = 0.0
    ttfa: list[float] = []
    audio_s = 0.0
    for i in range(streams):
        started = time.perf_counter()
        first = None
        for chunk in voice.synthesize(UTTERANCES[i % len(UTTERANCES)]):
            first = first or time.perf_counter()
            audio_s += len(chunk.audio_float_array) / chunk.sample_rate
        total = time.perf_counter() - started
        ttfa.append(1000 * (queue_wait + (first - started)))
        queue_wait += total
    return {
        "streams": streams,
        "ttfa_ms_p50": percentile(ttfa, 50),
        "ttfa_ms_p95": percentile(ttfa, 95),
        "last_client_waits_ms": ttfa[-1],
        "audio_s": audio_s,
    }


def _plot(rows: list[dict[str, Any]], path: str) -> None:
    import logging

    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ns = [r["streams"] for r in rows]
    ax1.boxplot([r["ttfa_ms_all"] or [0] for r in rows], tick_labels=[str(n) for n in ns], showfliers=True)
    ax1.axhline(250, color="tab:red", linestyle="--", linewidth=1, label="250 ms bound")
    ax1.set_xlabel("concurrent streams")
    ax1.set_ylabel("server TTFA (ms)")
    ax1.set_title("TTFA distribution")
    ax1.legend()
    ax2.bar([str(n) for n in ns], [r["underrun_ms"] for r in rows], color="tab:orange")
    ax2.set_xlabel("concurrent streams")
    ax2.set_ylabel("total underrun (ms)")
    ax2.set_title("client underruns")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench load — {result['date']}, {result['machine']}, {result['seconds']:.0f} s per step, "
        f"text at {result['words_per_s']:.0f} words/s, arrivals over {result['ramp_s']:g} s, "
        f"{result['pause_s']:g} s between replies"
    ]
    lines.append(
        "  streams contexts  TTFA p50   TTFA p95  underruns  underrun ms  server CPU  CPU s/audio s  client CPU  pass"
        "  late units (behind lead work)"
    )
    for r in result["rows"]:
        cpu = r.get("server_cpu_percent")
        per = r.get("server_cpu_s_per_audio_s")
        late = (
            ""
            if "server_late_units" not in r
            else f"{r['server_late_units']:>10} ({r['server_late_behind_lead_work']})"
        )
        lines.append(
            f"  {r['streams']:>7} {r['contexts']:>8} {r['ttfa_ms_p50'] or 0:>8.1f} ms {r['ttfa_ms_p95'] or 0:>7.1f} ms "
            f"{r['underruns']:>9} {r['underrun_ms']:>11.0f}  {'' if cpu is None else f'{cpu:>8.0f} %'}"
            f"  {'' if per is None else f'{per:>12.3f}'}  {r['client_cpu_percent']:>8.0f} %"
            f"  {'yes' if r['pass'] else 'no ':<4}  {late}"
            + (f"  errors: {','.join(r['errors'])}" if r["errors"] else "")
        )
    lines.append(
        "  late units: the server's count of units that finished after their listener ran dry; in brackets, those"
        f" that started while a worker ran work over {LEAD_WORK_S:g} s ahead (the share preemption could address)"
    )
    for r in result["rows"]:
        if by_role := r.get("server_cpu_ms_per_audio_s_by_role"):
            split = ", ".join(f"{role.replace('_', ' ')} {ms:.1f}" for role, ms in by_role.items())
            lines.append(f"  N={r['streams']}: server CPU ms per audio s by thread role: {split}")
    for r in result["rows"]:
        if phases := r.get("phases"):
            lines.append(describe_phases(r["streams"], phases))
    if any("phases" in r for r in result["rows"]):
        lines.append(
            f"  (from the server's unit trace and its CPU read every {CPU_SAMPLE_S:g} s: arrivals are the ramp"
            f" and {SETTLE_S:g} s after it; full: the share of the phase with the server above"
            f" {100 * FULL_SHARE:.0f} % of all cores; worker CPU per audio s counts the workers' own threads)"
        )
    if result.get("max_streams") is not None:
        lines.append(
            f"  largest N with zero underruns and p95 TTFA <= {result['ttfa_bound_ms']:.0f} ms: {result['max_streams']}"
        )
    duty = "" if result["duty_cycle"] == 1.0 else f" ÷ duty cycle {result['duty_cycle']:.2f}"
    lines.append(
        f"  physical limit = {result['machine'].split(', ')[-1].split()[0]} cores ÷ raw single-thread "
        f"{result['raw_cpu_s_per_audio_s']:.3f} CPU s per audio s{duty} = {result['limit_streams']:.1f} streams"
        + (f"; N_max ÷ limit = {result['max_over_limit']:.2f}" if result.get("max_over_limit") is not None else "")
    )
    if result.get("limit_streams_all_cores") is not None:
        lines.append(
            f"  with every core running the raw graph at once: {result['raw_all_cores_cpu_s_per_audio_s']:.3f} CPU s"
            f" per audio s each, limit {result['limit_streams_all_cores']:.1f} streams"
            f" ({result['limit_streams_all_cores'] / result['limit_streams']:.2f} of the single-thread limit)"
            + (
                f"; N_max ÷ that = {result['max_over_limit_all_cores']:.2f}"
                if result.get("max_over_limit_all_cores") is not None
                else ""
            )
        )
    if result.get("limit_streams_lifted") is not None:
        lines.append(
            f"  with the graph rewritten as served: raw {result['raw_lifted_cpu_s_per_audio_s']:.3f} CPU s per "
            f"audio s, limit {result['limit_streams_lifted']:.1f} streams"
            + (
                f"; N_max ÷ limit = {result['max_over_limit_lifted']:.2f}"
                if result.get("max_over_limit_lifted") is not None
                else ""
            )
        )
    peer = result.get("peer")
    if peer:
        lines.append(
            f"  peer: piper-tts one request at a time, {peer['streams']} queued requests: TTFA p50 "
            f"{peer['ttfa_ms_p50']:.0f} ms, p95 {peer['ttfa_ms_p95']:.0f} ms (last client waits "
            f"{peer['last_client_waits_ms']:.0f} ms)"
        )
    return "\n".join(lines)


def run_load_bench(args: argparse.Namespace) -> int:
    proc = None
    url = args.url
    pid = None
    trace_dir = None
    if args.unit_trace and url is not None:
        raise SystemExit("--unit-trace needs the server this benchmark starts (no --url)")
    if url is None:
        extra: list[str] = []
        if args.unit_trace:
            trace_dir = tempfile.TemporaryDirectory(prefix="streamvox-trace-")
            extra = ["--unit-trace", os.path.join(trace_dir.name, "units.jsonl")]
        proc, port = start_server(
            args.threads,
            max_lead=args.max_lead,
            max_sessions=max(64, 2 * args.streams),
            workers=args.workers,
            extra=extra,
        )
        url = f"ws://127.0.0.1:{port}/v1/stream"
        pid = proc.pid
    profile = LoadProfile(words_per_s=args.words_per_s, ramp_s=args.ramp, pause_s=args.pause)
    cores = os.cpu_count() or 1
    try:
        steps = [args.streams]
        if args.find_max:
            steps = [n for n in FIND_MAX_STEPS if n <= args.streams] or [args.streams]
        rows = []
        max_streams = None
        workers = args.workers or cores
        for n in steps:
            every = CPU_SAMPLE_S if trace_dir is not None else None
            row = run_load(url, n, args.seconds, profile, pid, cpu_every_s=every)
            row["pass"] = passes(row, args.ttfa_bound)
            if trace_dir is not None:
                trace = read_unit_trace(os.path.join(trace_dir.name, "units.jsonl"), since=row["started"])
                row["phases"] = load_phases(
                    trace, row["started"], row["ended"], args.ramp, workers, row.get("server_cpu_timeline"), cores
                )
            rows.append(row)
            if row["pass"]:
                max_streams = n
            elif args.find_max:
                break
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if trace_dir is not None:
            trace_dir.cleanup()
    raw, raw_lifted = raw_single_thread_cpu_per_audio_s()
    raw_all_cores = raw_cpu_per_audio_s_all_cores(cores)
    best = next((r for r in reversed(rows) if r["pass"]), None)
    # Speech share of a listener's time at the largest passing N (1.0 with no pause between replies),
    # over each listener's own time connected: with a long ramp the last arrivals are present for less.
    duty = min(1.0, best["audio_s"] / best["present_s"]) if best and args.pause > 0 else 1.0
    limit = physical_limit(cores, raw, duty)
    limit_lifted = physical_limit(cores, raw_lifted, duty)
    limit_all_cores = physical_limit(cores, raw_all_cores, duty)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "raw_cpu_s_per_audio_s": raw,
        "duty_cycle": duty,
        "limit_streams": limit,
        "max_over_limit": (max_streams / limit) if args.find_max and max_streams else None,
        "raw_all_cores_cpu_s_per_audio_s": raw_all_cores,
        "limit_streams_all_cores": limit_all_cores,
        "max_over_limit_all_cores": (max_streams / limit_all_cores) if args.find_max and max_streams else None,
        "raw_lifted_cpu_s_per_audio_s": raw_lifted,
        "limit_streams_lifted": limit_lifted,
        "max_over_limit_lifted": (max_streams / limit_lifted) if args.find_max and max_streams else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "seconds": args.seconds,
        "words_per_s": args.words_per_s,
        "ramp_s": args.ramp,
        "pause_s": args.pause,
        "ttfa_bound_ms": args.ttfa_bound,
        "rows": rows,
        "max_streams": max_streams if args.find_max else None,
        "peer": peer_baseline(max(r["streams"] for r in rows)) if not args.no_peer else None,
    }
    if args.plot:
        _plot(rows, args.plot)
    if args.json:
        for r in result["rows"]:
            for key in ("ttfa_ms_all", "started", "ended"):  # monotonic times mean nothing to a reader
                r.pop(key, None)
        print(json.dumps(result))
    else:
        print(_table(result))
    return 0

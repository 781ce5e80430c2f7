"""``streamvox bench ray``: the load bench against Ray Serve and against one server, in one run.

Both get the same cores: a local Ray instance serving ``--replicas`` replicas
of ``--cpus-per-replica`` CPUs each (``streamvox serve --ray``), and one
aiohttp server with as many engine workers and threads as the replicas have
in all.  Each step of N listeners (``bench load``'s LLM-paced clients) runs
against the standalone server, then against Ray, so the two see the same
machine state.  Per target it prints the largest passing N, TTFA (server-side
and at the client, from the first word sent), inter-packet gaps at the client
(p50/p95/p99: what Ray's proxy adds to each packet's path shows here) and the
CPU of the whole process tree per audio second (for Ray: its GCS, raylet,
proxy and controller as well as the replicas).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from streamvox.bench.harness import free_port, start_server, wait_healthy
from streamvox.bench.load import FIND_MAX_STEPS, LoadProfile, passes, run_load

COLUMNS = ("client_ttfa_ms_p50", "client_ttfa_ms_p95", "ttfa_ms_p95", "packet_gap_ms_p50", "packet_gap_ms_p95",
           "packet_gap_ms_p99")  # fmt: skip


def start_ray(replicas: int, cpus: float, max_lead: float, max_sessions: int) -> tuple[subprocess.Popen[bytes], int]:
    """``streamvox serve --ray`` in a child process; returns once every replica is running."""
    port = free_port()
    command = [sys.executable, "-m", "streamvox.stream_server.cli", "--log-level", "WARNING", "serve", "--ray",
               "--replicas", str(replicas), "--cpus-per-replica", str(cpus), "--port", str(port),
               "--max-lead", str(max_lead), "--max-sessions", str(max_sessions)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:  # run_local prints this once serve.run has every replica running
        if line.startswith(b"streamvox on Ray Serve"):
            break
    else:
        raise RuntimeError(f"streamvox serve --ray exited with {proc.wait()}")
    wait_healthy(proc, port)
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_ray_bench(args: argparse.Namespace) -> int:
    cores = max(1, round(args.replicas * args.cpus_per_replica))
    max_sessions = max(64, 2 * args.streams)
    profile = LoadProfile(words_per_s=args.words_per_s, ramp_s=args.ramp, pause_s=args.pause)
    standalone, standalone_port = start_server(cores, max_lead=args.max_lead, max_sessions=max_sessions, workers=cores)
    ray_proc = None
    try:
        ray_proc, ray_port = start_ray(args.replicas, args.cpus_per_replica, args.max_lead, max_sessions)
        targets = {
            "standalone": (f"ws://127.0.0.1:{standalone_port}/v1/stream", standalone.pid, False),
            "ray": (f"ws://127.0.0.1:{ray_port}/v1/stream", ray_proc.pid, True),
        }
        steps = [n for n in FIND_MAX_STEPS if n <= args.streams] if args.find_max else [args.streams]
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        failed: set[str] = set()
        for n in steps:
            for name, (url, pid, tree) in targets.items():
                if name in failed:
                    continue
                row = run_load(url, n, args.seconds, profile, pid, tree=tree)
                row["pass"] = passes(row, args.ttfa_bound)
                row.pop("ttfa_ms_all", None)
                row.pop("per_stream", None)
                rows[name].append(row)
                if not row["pass"] and args.find_max:
                    failed.add(name)
            if failed == set(targets):
                break
    finally:
        _stop(standalone)
        if ray_proc is not None:
            _stop(ray_proc)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "replicas": args.replicas,
        "cpus_per_replica": args.cpus_per_replica,
        "standalone_workers": cores,
        "seconds": args.seconds,
        "words_per_s": args.words_per_s,
        "ttfa_bound_ms": args.ttfa_bound,
        "rows": rows,
        "max_streams": {name: max((r["streams"] for r in rs if r["pass"]), default=None) for name, rs in rows.items()},
    }
    print(json.dumps(result) if args.json else _table(result))
    return 0


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench ray — {result['date']}, {result['machine']}: Ray Serve {result['replicas']} replicas x "
        f"{result['cpus_per_replica']:g} CPU vs one server with {result['standalone_workers']} workers; "
        f"{result['seconds']:.0f} s per step, text at {result['words_per_s']:.0f} words/s",
        "  target      N  client TTFA p50/p95  server TTFA p95  packet gap p50/p95/p99  underruns  CPU s/audio s  pass",
    ]
    for name, rows in result["rows"].items():
        for r in rows:
            c = {k: r.get(k) or 0.0 for k in COLUMNS}
            per = r.get("server_cpu_s_per_audio_s")
            ttfa = f"{c['client_ttfa_ms_p50']:>7.0f} / {c['client_ttfa_ms_p95']:>4.0f} ms"
            gaps = " / ".join(f"{c[k]:>5.1f}" for k in COLUMNS[3:]) + " ms"
            cpu = "" if per is None else f"{per:>13.3f}"
            errors = f"  errors: {','.join(r['errors'])}" if r["errors"] else ""
            lines.append(
                f"  {name:<10} {r['streams']:>3}  {ttfa}  {c['ttfa_ms_p95']:>12.0f} ms  {gaps}  {r['underruns']:>9}"
                f"  {cpu}  {'yes' if r['pass'] else 'no'}{errors}"
            )
    for name, n in result["max_streams"].items():
        lines.append(f"  largest passing N ({name}): {n}")
    return "\n".join(lines)

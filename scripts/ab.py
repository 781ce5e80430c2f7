"""An earlier commit against the working tree, on this machine, in one run.

    python scripts/ab.py 6eaf9d5 --runs 40 --load

Checks out ``REV`` into a temporary git worktree, makes it importable as
``streamvox`` through a shim folder on ``PYTHONPATH`` (no install needed),
and starts a server from each tree, both serving the bundled voice and the
same random-weight GPT-SoVITS voice.  Then:

1. **Identical bytes.**  Seeded sessions (bundled voice in opus, pcm_s16le at
   16 kHz, wav and mulaw; the GPT-SoVITS voice in pcm) are spoken through both
   servers; every binary frame must be equal.  Exit status 1 if any differs.
2. **Single-stream TTFA and CPU**: the latency benchmark's paragraph through
   each server in alternating order (drift on a shared machine hits both
   alike); p50 / p95 / mean of the server TTFA, each server's CPU seconds per
   audio second, and the ratios now / before.
3. With ``--load``: ``bench load`` steps (``--load-steps``) run against both servers,
   interleaved run by run, ``--load-repeats`` times each; a side passes a step when
   every repeat passes and stops at the first it fails (``--load-keep-going``: runs
   them all).  Each line gives the server's CPU per audio second and its count of
   late units; ``--max-lead 3`` paces both servers as a deployed one is.
4. With ``--ar-load``: ``bench ar-serve``'s listeners of a v2-size random
   GPT-SoVITS voice (int8 T2S, bf16 vocoder, the default chunk schedule), N of
   them starting together (``--ar-streams``), ``--ar-repeats`` times per
   server, the sides alternating: first audio of each and the stall summed
   over them.
5. With ``--llm-paced``: ``bench first-span``'s texts sent word by word at 20
   words/s to each server in turn (``--paced-repeats`` times, seeds 11, 12, ...):
   first audio p50 / p95, playback stalls and the streamed audio's WER
   (whisper-tiny; needs the test extra) for each.  ``--first-words N`` starts
   both servers with that first-span limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from streamvox.bench.ar_serve import DEFAULT_VOICE, start_together, write_voices
from streamvox.bench.harness import percentile, playback_stall_ms, process_cpu_s, snr_db, start_server
from streamvox.bench.latency import PARAGRAPH, _server_utterance
from streamvox.bench.load import LoadProfile, passes, run_load
from streamvox.bench.random_voice import write_voice

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "stream_server", "codecs", "web_demo", "bench")
AR_VOICE = "ab-gpt-sovits"
TEXT = "Good morning! It is 9:30 and the forecast says 21 degrees. We will walk along the river, then have lunch."
CASES: list[tuple[str, dict[str, Any]]] = [
    ("piper opus", {"format": "opus", "seed": 7}),
    ("piper pcm_s16le 16 kHz", {"format": {"codec": "pcm_s16le", "sample_rate": 16000}, "seed": 7}),
    ("piper wav", {"format": "wav", "seed": 8}),
    ("piper mulaw", {"format": "mulaw_8000", "seed": 9}),
    ("piper noise off", {"format": {"codec": "pcm_s16le"}, "noise": False}),
    ("gpt-sovits pcm", {"voice": AR_VOICE, "format": {"codec": "pcm_s16le"}, "seed": 5}),
]
LOAD_STEPS = (1, 2, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40)


async def _session_bytes(url: str, configure: dict[str, Any], text: str) -> tuple[bytes, dict[str, Any]]:
    """Every binary frame of one seeded context, joined, and its ``done`` event."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "configure", **configure}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        audio = bytearray()
        while True:
            message = await asyncio.wait_for(ws.recv(), 300)
            if isinstance(message, bytes):
                audio += message
                continue
            event = json.loads(message)
            if event["type"] == "done":
                return bytes(audio), event
            if event["type"] in ("error", "cancelled"):
                raise RuntimeError(f"server sent {event}")


def _start(
    pythonpath: str | None, voice_dirs: list[Path], first_words: int | None, max_lead: float
) -> tuple[subprocess.Popen[bytes], str, int]:
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    extra = [arg for voice_dir in voice_dirs for arg in ("--gpt-sovits-voice", str(voice_dir))]
    if first_words is not None:
        extra += ["--first-words", str(first_words)]
    proc, port = start_server(threads=0, max_lead=max_lead, workers=None, env=env, max_sessions=128, extra=extra)
    return proc, f"ws://127.0.0.1:{port}/v1/stream", proc.pid


def _compare_bytes(servers: dict[str, tuple[Any, str, int]]) -> bool:
    same = True
    for name, configure in CASES:
        got = {side: asyncio.run(_session_bytes(url, configure, TEXT)) for side, (_, url, _) in servers.items()}
        (before, done_b), (now, done_n) = got["before"], got["now"]
        equal = before == now and done_b["samples"] == done_n["samples"]
        same &= equal
        verdict = "identical" if equal else "DIFFERENT"
        if not equal and "pcm" in name and len(before) == len(now):
            import numpy as np

            a, b = (np.frombuffer(x, dtype="<i2").astype(np.float64) for x in (before, now))
            verdict += f" (largest sample change {np.abs(a - b).max():.0f} of 32767, SNR {snr_db(a, b):.1f} dB)"
        print(f"bytes {name}: {verdict} ({len(now)} bytes, {done_n['samples']} samples)")
    return same


def _compare_ttfa(servers: dict[str, tuple[Any, str, int]], runs: int, rev: str) -> None:
    """Server TTFA and the server process's CPU seconds per audio second (issue 16's overhead
    numerator) on the latency paragraph, the sides alternating."""
    import psutil

    ttfa: dict[str, list[float]] = {"before": [], "now": []}
    cpu_s = {"before": 0.0, "now": 0.0}
    audio_s = {"before": 0.0, "now": 0.0}
    processes = {side: psutil.Process(pid) for side, (_, _, pid) in servers.items()}
    for i in range(runs + 2):  # the first two rounds warm both up
        order = ("before", "now") if i % 2 == 0 else ("now", "before")
        for side in order:
            started = process_cpu_s(processes[side])
            run = asyncio.run(_server_utterance(servers[side][1], PARAGRAPH))
            spent = process_cpu_s(processes[side]) - started
            if i >= 2:
                ttfa[side].append(run.ttfa_server_ms)
                cpu_s[side] += spent
                audio_s[side] += run.audio_s
    for side, values in ttfa.items():
        label = f"before ({rev})" if side == "before" else "now"
        print(
            f"{label}: server TTFA p50 {percentile(values, 50):.1f} ms, p95 {percentile(values, 95):.1f} ms, "
            f"mean {statistics.mean(values):.1f} ms (n={len(values)}); "
            f"server CPU {cpu_s[side] / audio_s[side]:.4f} s per audio s"
        )
    now, before = ttfa["now"], ttfa["before"]
    print(
        f"TTFA ratio now / before: p50 {percentile(now, 50) / percentile(before, 50):.3f}, "
        f"p95 {percentile(now, 95) / percentile(before, 95):.3f}, "
        f"mean {statistics.mean(now) / statistics.mean(before):.3f}; server CPU per audio s now / before: "
        f"{(cpu_s['now'] / audio_s['now']) / (cpu_s['before'] / audio_s['before']):.3f}"
    )


def _compare_load(
    servers: dict[str, tuple[Any, str, int]], seconds: float, steps: list[int], repeats: int, keep_going: bool
) -> None:
    """Each step ``repeats`` times per side, the sides alternating run by run; a side passes a
    step when every repeat passes, and (unless ``keep_going``) stops at the first step it fails."""
    profile = LoadProfile()
    best: dict[str, int | None] = {"before": None, "now": None}
    failed = {"before": False, "now": False}
    for n in steps:
        rows: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
        for r in range(repeats):
            for side in ("before", "now") if (n + r) % 2 else ("now", "before"):
                if failed[side]:
                    continue
                _, url, pid = servers[side]
                row = run_load(url, n, seconds, profile, pid)
                rows[side].append(row)
                print(
                    f"load {side} N={n} run {r + 1}: {'pass' if passes(row, 250.0) else 'FAIL'} "
                    f"(TTFA p95 {row['ttfa_ms_p95']:.0f} ms, underruns {row['underruns']}, "
                    f"server CPU {row.get('server_cpu_percent', 0):.0f} %, "
                    f"{row.get('server_cpu_s_per_audio_s') or 0:.4f} CPU s per audio s, "
                    f"late units {row.get('server_late_units')} ({row.get('server_late_behind_lead_work')} behind "
                    "work done ahead))",
                    flush=True,
                )
        for side, done in rows.items():
            if not done:
                continue
            if all(passes(row, 250.0) for row in done):
                best[side] = n
            elif not keep_going:
                failed[side] = True
            cpu = [row["server_cpu_s_per_audio_s"] for row in done if row.get("server_cpu_s_per_audio_s")]
            print(
                f"load {side} N={n}: {sum(passes(row, 250.0) for row in done)}/{len(done)} pass, "
                f"underruns {sum(row['underruns'] for row in done)}, "
                f"mean CPU s per audio s {statistics.mean(cpu) if cpu else 0:.4f}",
                flush=True,
            )
        if all(failed.values()):
            break
    print(f"largest passing N: before {best['before']}, now {best['now']}")


def _compare_ar_load(servers: dict[str, tuple[Any, str, int]], streams: list[int], repeats: int) -> None:
    """GPT-SoVITS listeners starting together on each server, the sides alternating run by run."""
    for n in streams:
        first: dict[str, list[float]] = {"before": [], "now": []}
        stall = {"before": 0.0, "now": 0.0}
        for r in range(repeats):
            for side in ("before", "now") if (n + r) % 2 else ("now", "before"):
                heard = asyncio.run(start_together(servers[side][1], DEFAULT_VOICE, n))
                first[side] += [h.first_audio_ms for h in heard]
                stall[side] += sum(h.stall_ms for h in heard)
                print(
                    f"ar-load {side} N={n} run {r + 1}: first audio "
                    f"{', '.join(f'{h.first_audio_ms:.0f}' for h in sorted(heard, key=lambda h: h.first_audio_ms))} ms,"
                    f" stall {sum(h.stall_ms for h in heard):.0f} ms ({sum(h.stall_ms > 0 for h in heard)} of {n}"
                    f" listeners), {heard[0].audio_s:.1f} s each",
                    flush=True,
                )
        print(
            f"ar-load N={n}: first audio p50 before {percentile(first['before'], 50):.0f} ms, now"
            f" {percentile(first['now'], 50):.0f} ms; stall before {stall['before']:.0f} ms, now {stall['now']:.0f} ms"
            f" ({repeats} runs a side)",
            flush=True,
        )


def _compare_llm_paced(servers: dict[str, tuple[Any, str, int]], rev: str, repeats: int) -> None:
    from streamvox.bench.first_span import SAMPLE_RATE, SEED, TEXTS, corpus_wer, speak

    delays: dict[str, list[float]] = {"before": [], "now": []}
    stalls: dict[str, list[float]] = {"before": [], "now": []}
    audio: dict[str, list[Any]] = {"before": [], "now": []}
    for repeat in range(repeats):
        for i, text in enumerate(TEXTS):
            for side in ("before", "now") if i % 2 == 0 else ("now", "before"):
                delay, pcm, arrivals = asyncio.run(speak(servers[side][1], text, paced=True, seed=SEED + repeat))
                delays[side].append(delay)
                stalls[side].append(playback_stall_ms(arrivals, SAMPLE_RATE))
                audio[side].append(pcm)
    for side in ("before", "now"):
        label = f"before ({rev})" if side == "before" else "now"
        error, _ = corpus_wer(TEXTS * repeats, audio[side])
        stalled = [x for x in stalls[side] if x > 0]
        print(
            f"LLM-paced {label}: first audio p50 {percentile(delays[side], 50):.0f} ms, "
            f"p95 {percentile(delays[side], 95):.0f} ms; stalled {len(stalled)} of {len(stalls[side])} "
            f"(longest {max(stalls[side]):.0f} ms); streamed WER {error:.2f} % "
            f"({len(TEXTS)} texts x {repeats} seeds)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", help="the earlier commit")
    parser.add_argument("--runs", type=int, default=40, help="TTFA utterances per server")
    parser.add_argument("--load", action="store_true", help="also step bench load against both servers")
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument(
        "--load-steps", type=int, nargs="+", default=list(LOAD_STEPS), help="stream counts to step through"
    )
    parser.add_argument("--load-repeats", type=int, default=1, help="runs of each step per server")
    parser.add_argument("--load-keep-going", action="store_true", help="run every step, failed or not")
    parser.add_argument(
        "--max-lead",
        type=float,
        default=0.0,
        help="both servers' lead limit (0: none, how fast they can go; the server's default is 3)",
    )
    parser.add_argument("--ar-load", action="store_true", help="also GPT-SoVITS listeners starting together")
    parser.add_argument("--ar-streams", type=int, nargs="+", default=[1, 2, 4], help="their counts")
    parser.add_argument("--ar-repeats", type=int, default=2, help="runs of each count per server")
    parser.add_argument("--llm-paced", action="store_true", help="also first audio and WER of LLM-paced text")
    parser.add_argument("--paced-repeats", type=int, default=1, help="LLM-paced runs per text (one seed each)")
    parser.add_argument("--first-words", type=int, help="both servers' first-span limit (default: their own)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree, shim = Path(tmp) / "tree", Path(tmp) / "shim" / "streamvox"
        voice_dirs = [write_voice(Path(tmp) / AR_VOICE, "tiny", seed=3, eos_scale=50.0)]
        if args.ar_load:
            voice_dirs += write_voices(Path(tmp), 320, max(args.ar_streams), (8, 2))[:1]  # default schedule only
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.rev], check=True)
        try:
            shim.mkdir(parents=True)
            (shim / "__init__.py").touch()
            for name in PACKAGES:
                if (tree / name).is_dir():
                    (shim / name).symlink_to(tree / name)
            servers = {
                "before": _start(str(shim.parent), voice_dirs, args.first_words, args.max_lead),
                "now": _start(None, voice_dirs, args.first_words, args.max_lead),
            }
            try:
                same = _compare_bytes(servers)
                _compare_ttfa(servers, args.runs, args.rev)
                if args.load:
                    _compare_load(servers, args.load_seconds, args.load_steps, args.load_repeats, args.load_keep_going)
                if args.ar_load:
                    _compare_ar_load(servers, args.ar_streams, args.ar_repeats)
                if args.llm_paced:
                    _compare_llm_paced(servers, args.rev, args.paced_repeats)
            finally:
                for proc, _, _ in servers.values():
                    proc.terminate()
                    proc.wait(30)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print("identical bytes: yes" if same else "identical bytes: NO")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

"""``streamvox bench ar-serve``: GPT-SoVITS streams that start together, over a real server.

``bench ar`` times the model path alone at batch 1; this is what listeners of
a served GPT-SoVITS voice get when several of them start at once (a reply
each, the whole text sent at once): the engine's lanes, batched steps and
vocoder chunks on its workers, the protocol and the codec.  The voice is a
v2-size random-weight one (``--size tiny`` for tests) in the real file
formats (int8 T2S and the bf16 vocoder, the fastest CPU settings), written
twice: with the default chunk schedule and with a fast start
(``--fast-start``: the first chunk's size and its own lookahead).  Random
weights never predict end of speech, so each sentence runs to the voice's
cache (``--max-len``) and the reply's length is fixed by it.  For each stream count the streams start together
``--repeats`` times per schedule, the schedules alternating; each listener
plays from ``PREBUFFER_S`` after its first packet.  It prints each run's
first-audio times (from the text sent, in the order they came), the playback
stall summed over the listeners, and the audio each one heard; with
``--unit-trace``, also the server's units in the run by action (prefill
``start``, batched ``step``, vocoder ``chunk``...): how many, their batch, their
time on the workers, how many came late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamvox.bench.harness import playback_stall_ms, start_server
from streamvox.bench.random_voice import write_voice
from streamvox.bench.trace_summary import action_summary, describe_actions
from streamvox.engine.unit_trace import read_unit_trace

PREBUFFER_S = 0.1
"""How long a listener buffers before it starts playing (as ``bench load``'s listeners do)."""
TEXT = "Thanks for waiting. The train to the airport leaves from platform four in about ten minutes."
DEFAULT_VOICE = "ar-serve-default"
FAST_VOICE = "ar-serve-fast-start"


@dataclass(frozen=True)
class Listener:
    """What one listener of a run got."""

    first_audio_ms: float
    stall_ms: float
    audio_s: float


async def listen(url: str, voice: str, text: str = TEXT) -> Listener:
    """One reply on ``voice`` in 16-bit PCM at the voice's rate: the text and its end sent at
    once, every packet's arrival kept."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "configure", "voice": voice, "format": {"codec": "pcm_s16le"}}))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"configure refused: {ready}")
        rate = int(ready["format"]["sample_rate"])
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        arrivals: list[tuple[float, int]] = []
        while True:
            message = await asyncio.wait_for(ws.recv(), 300)
            if isinstance(message, bytes):
                arrivals.append((time.monotonic(), len(message) // 2))
                continue
            event = json.loads(message)
            if event["type"] == "done":
                break
            if event["type"] in ("error", "cancelled"):
                raise RuntimeError(f"server sent {event}")
    if not arrivals:
        raise RuntimeError("no audio")
    return Listener(
        first_audio_ms=1000 * (arrivals[0][0] - sent),
        stall_ms=playback_stall_ms(arrivals, rate, PREBUFFER_S),
        audio_s=sum(n for _, n in arrivals) / rate,
    )


async def start_together(url: str, voice: str, streams: int, text: str = TEXT) -> list[Listener]:
    """``streams`` listeners of ``voice`` who start at the same moment."""
    return list(await asyncio.gather(*(listen(url, voice, text) for _ in range(streams))))


def write_voices(
    directory: Path, max_len: int, streams: int, fast_start: tuple[int, int], size: str = "v2"
) -> list[Path]:
    """The benchmark's two voices (default schedule, fast start), same weights (``size``: ``v2``,
    or ``tiny`` for tests)."""
    settings: dict[str, Any] = {"int8": True, "bf16_vocoder": True, "max_streams": streams, "max_len": max_len}
    first, lookahead = fast_start
    fast = {**settings, "chunks": {"first": first, "first_lookahead": lookahead}}
    return [
        write_voice(directory / DEFAULT_VOICE, size, seed=0, settings=settings),
        write_voice(directory / FAST_VOICE, size, seed=0, settings=fast),
    ]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        voices = write_voices(Path(tmp), args.max_len, max(args.streams), tuple(args.fast_start), args.size)
        extra = ["--no-bundled-voice"] + [arg for v in voices for arg in ("--gpt-sovits-voice", str(v))]
        trace = Path(tmp) / "units.jsonl"
        if args.unit_trace:
            extra += ["--unit-trace", str(trace)]
        proc, port = start_server(threads=0, max_lead=3.0, extra=extra)
        url = f"ws://127.0.0.1:{port}/v1/stream"
        runs: list[dict[str, Any]] = []
        try:
            for voice in (DEFAULT_VOICE, FAST_VOICE):  # first calls, untimed
                asyncio.run(start_together(url, voice, 1))
            for n in args.streams:
                for repeat in range(args.repeats):
                    order = (DEFAULT_VOICE, FAST_VOICE) if repeat % 2 == 0 else (FAST_VOICE, DEFAULT_VOICE)
                    for voice in order:
                        started = time.monotonic()
                        heard = asyncio.run(start_together(url, voice, n))
                        ended = time.monotonic()
                        runs.append(
                            {
                                "schedule": "fast start" if voice == FAST_VOICE else "default",
                                "streams": n,
                                "repeat": repeat,
                                "first_audio_ms": sorted(h.first_audio_ms for h in heard),
                                "stall_ms": sum(h.stall_ms for h in heard),
                                "stalled_listeners": sum(h.stall_ms > 0 for h in heard),
                                "audio_s": statistics.mean(h.audio_s for h in heard),
                            }
                        )
                        if args.unit_trace:
                            runs[-1]["units"] = action_summary(read_unit_trace(trace, since=started, until=ended))
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "size": args.size,
        "max_len": args.max_len,
        "fast_start": {"first": args.fast_start[0], "first_lookahead": args.fast_start[1]},
        "prebuffer_ms": 1000 * PREBUFFER_S,
        "runs": runs,
    }


def _table(result: dict[str, Any]) -> str:
    fast = result["fast_start"]
    lines = [
        f"streamvox bench ar-serve — {result['date']}; {result['size']}-size random GPT-SoVITS voice,"
        f" int8 T2S + bf16 vocoder; fast start = first chunk {fast['first']} + {fast['first_lookahead']};"
        f" listeners buffer {result['prebuffer_ms']:.0f} ms",
        "  streams  schedule     first audio ms (each listener)        stall ms (listeners)  audio s each",
    ]
    for r in result["runs"]:
        firsts = ", ".join(f"{t:.0f}" for t in r["first_audio_ms"])
        lines.append(
            f"  {r['streams']:>7}  {r['schedule']:<11}  {firsts:<36} {r['stall_ms']:>8.0f} ({r['stalled_listeners']})"
            f" {r['audio_s']:>14.1f}"
        )
        if "units" in r:
            lines.append(f"           units: {describe_actions(r['units'])}")
    return "\n".join(lines)


def run_ar_serve_bench(args: argparse.Namespace) -> int:
    result = measure(args)
    print(json.dumps(result) if args.json else _table(result))
    return 0

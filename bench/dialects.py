"""``streamvox bench latency --dialect NAME|all``: first audio through each dialect vs the native
protocol, interleaved run by run in one server.

Each run sends one short sentence at once (and ends the input) on a fresh
connection (HTTP: one already open, as a client's pool keeps it), times it to
the first audio byte and reads the rest, so no run leaves work behind for the
next: native protocol 1 at 24 kHz
PCM, OpenAI ``pcm``, ElevenLabs ``stream-input`` ``pcm_24000``, Cartesia raw
``pcm_s16le`` at 24 kHz, Wyoming one-shot ``synthesize`` (PCM at the voice's
rate).  The table gives each dialect's median against the native runs beside
it, and the difference (the dialect's overhead).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamvox.bench.harness import free_port, start_server
from streamvox.bench.latency import FIRST_BYTES_TEXT

DIALECTS = ("openai", "elevenlabs", "cartesia", "wyoming")


async def native_ms(http: str, text: str = FIRST_BYTES_TEXT) -> float:
    import websockets

    async with websockets.connect(http.replace("http://", "ws://") + "/v1/stream", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "configure", "format": {"codec": "pcm_s16le", "sample_rate": 24000}}))
        json.loads(await ws.recv())
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        while not isinstance(await ws.recv(), bytes):
            pass
        first = (time.perf_counter() - started) * 1000
        while isinstance(message := await ws.recv(), bytes) or json.loads(message)["type"] != "done":
            pass
        return first


async def openai_ms(http: str, text: str = FIRST_BYTES_TEXT) -> float:
    import aiohttp

    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/healthz") as warm:  # the connection is up, as a client's pool keeps it
            await warm.read()
        started = time.perf_counter()
        async with session.post(f"{http}/v1/audio/speech", json=body) as response:
            await response.content.readany()
            first = (time.perf_counter() - started) * 1000
            await response.read()
            return first


async def elevenlabs_ms(http: str, text: str = FIRST_BYTES_TEXT) -> float:
    import websockets

    url = http.replace("http://", "ws://") + "/v1/text-to-speech/voice/stream-input?output_format=pcm_24000"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = time.perf_counter()
        await ws.send(json.dumps({"text": text}))
        await ws.send(json.dumps({"text": ""}))
        while not json.loads(await ws.recv()).get("audio"):
            pass
        first = (time.perf_counter() - started) * 1000
        while json.loads(await ws.recv()).get("isFinal") is not True:
            pass
        return first


async def cartesia_ms(http: str, text: str = FIRST_BYTES_TEXT) -> float:
    import websockets

    request = {"context_id": "bench", "model_id": "sonic-3", "transcript": text, "voice": {"mode": "id", "id": "v"},
               "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}}  # fmt: skip
    async with websockets.connect(http.replace("http://", "ws://") + "/tts/websocket", max_size=None) as ws:
        started = time.perf_counter()
        await ws.send(json.dumps(request))
        while json.loads(await ws.recv())["type"] != "chunk":
            pass
        first = (time.perf_counter() - started) * 1000
        while json.loads(await ws.recv())["type"] != "done":
            pass
        return first


def wyoming_ms(port: int) -> Callable[[str], Awaitable[float]]:
    async def measure(_http: str, text: str = FIRST_BYTES_TEXT) -> float:
        from wyoming.client import AsyncTcpClient
        from wyoming.tts import Synthesize

        async with AsyncTcpClient("127.0.0.1", port) as client:
            started = time.perf_counter()
            await client.write_event(Synthesize(text=text).event())
            while (event := await client.read_event()) is not None and event.type != "audio-chunk":
                pass
            first = (time.perf_counter() - started) * 1000
            while (event := await client.read_event()) is not None and event.type != "audio-stop":
                pass
            return first

    return measure


def compare(runs: int, threads: int, dialects: tuple[str, ...]) -> dict[str, Any]:
    """Median first-audio times per dialect and of the native runs interleaved with it."""
    wyoming_port = free_port()
    aliases = ["--voice-alias", "voice=en_US-joe-medium", "--voice-alias", "v=en_US-joe-medium"]
    proc, port = start_server(threads, extra=["--wyoming-port", str(wyoming_port), *aliases])
    http = f"http://127.0.0.1:{port}"
    runners: dict[str, Callable[[str], Awaitable[float]]] = {
        "openai": openai_ms,
        "elevenlabs": elevenlabs_ms,
        "cartesia": cartesia_ms,
        "wyoming": wyoming_ms(wyoming_port),
    }
    out: dict[str, Any] = {}
    try:
        asyncio.run(native_ms(http))  # warm-up
        for name in dialects:
            asyncio.run(runners[name](http))
            native: list[float] = []
            dialect: list[float] = []
            for _ in range(runs):
                native.append(asyncio.run(native_ms(http)))
                dialect.append(asyncio.run(runners[name](http)))
            n, d = statistics.median(native), statistics.median(dialect)
            pairs = [b - a for a, b in zip(native, dialect, strict=True)]
            out[name] = {"native_ms": n, "dialect_ms": d, "overhead_ms": statistics.median(pairs), "ratio": d / n}
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def format_dialects(result: dict[str, Any], runs: int) -> str:
    lines = [f"first audio by dialect (one sentence sent at once -> first audio byte, medians of {runs} "
             "runs interleaved with native pcm_s16le 24 kHz):"]  # fmt: skip
    for name, r in result.items():
        lines.append(
            f"  {name:<11} {r['dialect_ms']:7.1f} ms  vs native {r['native_ms']:7.1f} ms  ratio {r['ratio']:.3f}"
            f"  overhead (median of paired differences) {r['overhead_ms']:+.1f} ms"
        )
    return "\n".join(lines)


def run_dialect_bench(runs: int, threads: int, which: str, as_json: bool) -> int:
    dialects = DIALECTS if which == "all" else (which,)
    result = compare(runs, threads, dialects)
    print(json.dumps(result) if as_json else format_dialects(result, runs))
    return 0

"""The OpenAI dialect, driven by the real ``openai`` package (unchanged but for its base URL)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from typing import Any

import numpy as np
import openai
import pytest
import soundfile as sf
import websockets
from streamvox.stream_server.app import RUNTIME, STREAM_PATH

from tests.helpers.audio import sf_read_stream
from tests.helpers.mp3 import decode_mp3
from tests.helpers.ws import speak_whole

pytestmark = pytest.mark.dialect

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back home before the rain starts."
LONG = " ".join([TEXT] * 6)


def _client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="not-checked", max_retries=0)


async def _speech(base: str, fmt: str, text: str = TEXT, **extra: Any) -> bytes:
    async with (
        _client(base) as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format=fmt, **extra
        ) as response,
    ):
        assert response.status_code == 200
        return b"".join([chunk async for chunk in response.iter_bytes()])


async def _native_pcm(base: str, rate: int, seed: int) -> bytes:
    url = base.replace("http://", "ws://") + STREAM_PATH
    exchange = await speak_whole(url, TEXT, {"format": {"codec": "pcm_s16le", "sample_rate": rate}, "seed": seed})
    return b"".join(exchange.audio)


async def test_pcm_is_the_native_protocols_pcm_at_24_khz(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    pcm = await _speech(base, "pcm")
    assert len(pcm) > 24000 * 2 * 3
    assert pcm == await _native_pcm(base, 24000, seed=7)


@pytest.mark.parametrize("fmt", ["wav", "flac", "opus", "mp3"])
async def test_every_format_decodes_to_the_pcm_samples(dialect_server: tuple[str, Any], fmt: str) -> None:
    base, _ = dialect_server
    data = await _speech(base, fmt)
    samples = len(await _speech(base, "pcm")) // 2
    if fmt == "mp3":
        decoded = decode_mp3(data, 24000)
        assert 0 <= len(decoded) - 1105 - samples < 576
        return
    if fmt == "wav":
        assert data[:4] == b"RIFF"
        decoded, rate = sf.read(io.BytesIO(data), dtype="float32")
    else:
        decoded, rate = sf_read_stream(data)
    expected = samples * 2 if fmt == "opus" else samples  # Ogg/Opus is 48 kHz
    assert rate == (48000 if fmt == "opus" else 24000)
    assert abs(len(decoded) - expected) <= 2


async def test_sse_events_carry_the_same_audio(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    async with (
        _client(base) as client,
        client.audio.speech.with_streaming_response.create(
            model="gpt-4o-mini-tts", voice="coral", input=TEXT, response_format="pcm", stream_format="sse"
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.iter_lines()]
    events = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done" and "usage" in events[-1]
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == await _speech(base, "pcm")


async def test_the_sync_client_streams_too(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server

    def run() -> bytes:
        with (
            openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as client,
            client.audio.speech.with_streaming_response.create(
                model="tts-1", voice={"id": "joe"}, input=TEXT, response_format="pcm", speed=1.0
            ) as response,
        ):
            return b"".join(response.iter_bytes(4096))

    assert await asyncio.to_thread(run) == await _speech(base, "pcm")


async def test_speed_changes_the_duration(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    normal = len(await _speech(base, "pcm"))
    fast = len(await _speech(base, "pcm", speed=2.0))
    assert 0.4 < fast / normal < 0.65


@pytest.mark.asr
async def test_the_audio_says_the_text(dialect_server: tuple[str, Any]) -> None:
    from streamvox.bench.asr import transcribe, wer

    base, _ = dialect_server
    pcm = np.frombuffer(await _speech(base, "pcm"), dtype="<i2").astype(np.float32) / 32768
    assert wer(TEXT, transcribe(pcm, 24000)) <= 0.10


async def test_closing_the_response_stops_generation(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    engine = app[RUNTIME].engine
    async with (
        _client(base) as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=LONG, response_format="pcm"
        ) as response,
    ):
        async for _ in response.iter_bytes():
            break
        assert engine.active_streams == 1
        closed_at = time.monotonic()
    while engine.active_streams and time.monotonic() < closed_at + 2:
        await asyncio.sleep(0.01)
    assert engine.active_streams == 0
    print(f"generation stopped {1000 * (time.monotonic() - closed_at):.0f} ms after the client closed")
    assert time.monotonic() - closed_at < 0.3


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"model": "tts-1", "voice": "nobody", "input": "hi"}, "voice"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "aac"}, "response_format"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"}, "response_format"),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 9}, "speed"),
    ],
)
async def test_bad_requests_get_openais_error_and_lose_nothing_else(
    dialect_server: tuple[str, Any], request_body: dict[str, Any], param: str
) -> None:
    base, _ = dialect_server
    reference = await _speech(base, "pcm")
    other = asyncio.create_task(_speech(base, "pcm"))
    async with _client(base) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.audio.speech.create(**request_body)  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["param"] == param
    assert body["message"]
    assert await other == reference


async def test_malformed_json_is_a_400_in_openais_shape(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    async with websockets.connect(base.replace("http://", "ws://") + STREAM_PATH):
        pass  # the native route still answers beside the dialect
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/audio/speech", data=b"{oops") as r:
            assert r.status == 400
            body = await r.json()
        assert body["error"]["type"] == "invalid_request_error" and "JSON" in body["error"]["message"]
        # a JSON-escaped lone surrogate: the SDK cannot even send one, a raw client can
        surrogate = {"model": "m", "voice": "alloy", "input": "a lone \ud800"}
        for body, param in (({"voice": "alloy", "input": "hi"}, "model"), ({"model": "m", "voice": "alloy"}, "input"),
                            (surrogate, "input")):  # fmt: skip
            data = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as \ud800
            async with http.post(
                f"{base}/v1/audio/speech", data=data, headers={"Content-Type": "application/json"}
            ) as r:
                assert r.status == 400
                assert (await r.json())["error"]["param"] == param

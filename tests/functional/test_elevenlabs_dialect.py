"""The ElevenLabs dialect: the real ``elevenlabs`` SDK over ``wss://`` (a CA the test makes), and
the multi-context socket and HTTP routes as Pipecat and LiveKit use them."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from streamvox.stream_server.app import RUNTIME, STREAM_PATH

from tests.helpers.dialect_ws import read_multi
from tests.helpers.ws import speak_whole

pytestmark = pytest.mark.dialect

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back home before the rain starts."
VOICE = "21m00Tcm4TlvDq8ikWAM"  # an ElevenLabs voice id, aliased to the bundled voice by the fixture
SEED = 7


async def _native_pcm(url: str, rate: int) -> bytes:
    exchange = await speak_whole(url, TEXT, {"format": {"codec": "pcm_s16le", "sample_rate": rate}, "seed": SEED})
    return b"".join(exchange.audio)


async def test_the_sdks_realtime_helper_speaks_over_wss(
    tls_dialect_server: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenlabs.client import ElevenLabs

    address, ca_file, _ = tls_dialect_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))

    def run() -> bytes:
        client = ElevenLabs(api_key="not-checked", base_url=f"https://{address}")
        words = iter(f"{w} " for w in TEXT.split())
        return b"".join(client.text_to_speech.convert_realtime(VOICE, text=words, output_format="pcm_22050"))

    pcm = await asyncio.to_thread(run)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    async with websockets.connect(f"wss://{address}{STREAM_PATH}", ssl=ctx, max_size=None) as ws:
        from tests.helpers.ws import collect_until, recv_json, send

        await recv_json(ws)
        await send(ws, type="configure", format={"codec": "pcm_s16le", "sample_rate": 22050}, seed=SEED)
        await recv_json(ws)
        for word in TEXT.split():
            await send(ws, type="text", text=f"{word} ")
        await send(ws, type="end")
        native = b"".join((await collect_until(ws)).audio)
    assert len(pcm) > 22050 * 2 * 3
    assert pcm == native  # the same text, voice and seed: the same PCM as the native protocol


@pytest.mark.asr
async def test_the_sdks_audio_says_the_text(
    tls_dialect_server: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from elevenlabs.client import ElevenLabs
    from streamvox.bench.asr import transcribe, wer

    address, ca_file, _ = tls_dialect_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))

    def run() -> bytes:
        client = ElevenLabs(api_key="x", base_url=f"https://{address}")
        return b"".join(client.text_to_speech.convert_realtime(VOICE, text=iter([TEXT]), output_format="pcm_16000"))

    pcm = np.frombuffer(await asyncio.to_thread(run), dtype="<i2").astype(np.float32) / 32768
    assert wer(TEXT, transcribe(pcm, 16000)) <= 0.10


async def test_multi_stream_contexts_with_alignment_like_pipecat(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    url = base.replace("http://", "ws://") + f"/v1/text-to-speech/{VOICE}/multi-stream-input?output_format=pcm_22050"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "turn-1", "voice_settings": {"speed": 1.0}}))
        for word in TEXT.split():
            await ws.send(json.dumps({"text": f"{word} ", "context_id": "turn-1"}))
        await ws.send(json.dumps({"text": ""}))  # a context-less keepalive
        await ws.send(json.dumps({"context_id": "turn-1", "flush": True}))
        await ws.send(json.dumps({"context_id": "turn-1", "close_context": True}))
        await ws.send(json.dumps({"text": " ", "contextId": "turn-2"}))
        await ws.send(json.dumps({"text": "A second turn. ", "contextId": "turn-2", "flush": True}))
        await ws.send(json.dumps({"contextId": "turn-2", "close_context": True}))
        seen = await read_multi(ws, {"turn-1", "turn-2"})
    first = seen["turn-1"]
    assert first[-1] == {"isFinal": True, "contextId": "turn-1", "context_id": "turn-1"}
    pcm = b"".join(base64.b64decode(m["audio"]) for m in first if m.get("audio"))
    assert pcm == await _native_pcm(base.replace("http://", "ws://") + STREAM_PATH, 22050)
    # Pipecat's clock: each message's alignment restarts at zero and advances by its last character.
    clock, spoken = 0.0, ""
    starts = []
    for message in first:
        alignment = message.get("alignment")
        if alignment:
            assert alignment == message["normalizedAlignment"]
            starts += [clock + s / 1000 for s in alignment["charStartTimesMs"]]
            spoken += "".join(alignment["chars"])
            clock += (alignment["charStartTimesMs"][-1] + alignment["charDurationsMs"][-1]) / 1000
    assert spoken.split() == TEXT.split()
    assert starts == sorted(starts)
    assert clock <= len(pcm) / 2 / 22050 + 0.05
    assert any(m.get("audio") for m in seen["turn-2"])


async def test_bad_input_gets_elevenlabs_error_and_1008_while_others_stream(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    ws_base = base.replace("http://", "ws://")
    native = ws_base + STREAM_PATH
    reference = await _native_pcm(native, 22050)
    other = asyncio.create_task(_native_pcm(native, 22050))
    cases = [
        (f"/v1/text-to-speech/{VOICE}/stream-input", "{oops", "invalid_message"),
        (f"/v1/text-to-speech/{VOICE}/stream-input?output_format=wav_99", None, "invalid_output_format"),
        ("/v1/text-to-speech/nobody/stream-input", None, "voice_not_found"),
        (f"/v1/text-to-speech/{VOICE}/stream-input", json.dumps({"text": "Hi first"}), "invalid_message"),
        (f"/v1/text-to-speech/{VOICE}/stream-input", json.dumps({"text": " ", "voice_settings": {"speed": 3}}),
         "invalid_message"),
        (f"/v1/text-to-speech/{VOICE}/stream-input?inactivity_timeout=999", None, "invalid_inactivity_timeout"),
        (f"/v1/text-to-speech/{VOICE}/multi-stream-input", '{"text": "a lone \\ud800", "context_id": "c"}',
         "invalid_message"),
    ]  # fmt: skip
    for path, message, error in cases:
        async with websockets.connect(ws_base + path) as ws:
            if message is not None:
                await ws.send(message)
            body = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert body["error"] == error and body["code"] == 1008 and body["message"], body
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert await other == reference


async def test_too_many_contexts_is_elevenlabs_max_active_conversations(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    limit = app[RUNTIME].config.max_contexts
    url = base.replace("http://", "ws://") + f"/v1/text-to-speech/{VOICE}/multi-stream-input?output_format=pcm_16000"
    async with websockets.connect(url, max_size=None) as ws:
        for i in range(limit + 1):
            await ws.send(json.dumps({"text": "Waiting for more words", "context_id": f"c{i}"}))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if "error" in message:
                break
        assert message["error"] == "max_active_conversations" and message["code"] == 1008


async def test_inactivity_timeout_closes_the_elevenlabs_way(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    url = base.replace("http://", "ws://") + f"/v1/text-to-speech/{VOICE}/stream-input?inactivity_timeout=0.5"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": " "}))
        started = time.monotonic()
        body = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert body["error"] == "input_timeout_exceeded"
        assert 0.4 < time.monotonic() - started < 3


async def test_http_stream_and_with_timestamps(dialect_server: tuple[str, Any]) -> None:
    base, _ = dialect_server
    native = await _native_pcm(base.replace("http://", "ws://") + STREAM_PATH, 24000)
    async with aiohttp.ClientSession() as http:
        url = f"{base}/v1/text-to-speech/{VOICE}/stream?output_format=pcm_24000"
        async with http.post(url, json={"text": TEXT, "model_id": "eleven_flash_v2_5"}) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "audio/pcm"
            assert await r.read() == native
        url = f"{base}/elevenlabs/v1/text-to-speech/{VOICE}/stream/with-timestamps?output_format=pcm_24000"
        async with http.post(url, json={"text": TEXT}) as r:
            lines = [json.loads(line) for line in (await r.text()).splitlines() if line]
        audio = b"".join(base64.b64decode(line["audio_base64"]) for line in lines)
        assert audio == native
        chars = [c for line in lines if line["alignment"] for c in line["alignment"]["characters"]]
        assert "".join(chars).split() == TEXT.split()
        async with http.post(f"{base}/v1/text-to-speech/nobody/stream", json={"text": "hi"}) as r:
            assert r.status == 404 and (await r.json())["detail"]["status"] == "voice_not_found"
        async with http.get(f"{base}/elevenlabs/v1/voices") as r:
            ids = [v["voice_id"] for v in (await r.json())["voices"]]
        assert "en_US-joe-medium" in ids and VOICE in ids

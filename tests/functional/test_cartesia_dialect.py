"""The Cartesia dialect, driven by the real ``cartesia`` SDK over ``wss://`` (a CA the test makes)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from streamvox.codecs.pcm import alaw_to_s16, mulaw_to_s16
from streamvox.stream_server.app import RUNTIME, STREAM_PATH

from tests.helpers.dialect_ws import cartesia_pcm
from tests.helpers.ws import speak_whole

pytestmark = pytest.mark.dialect

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back home before the rain starts."
VOICE = {"mode": "id", "id": "joe"}


def _format(encoding: str = "pcm_s16le", rate: int = 24000) -> dict[str, Any]:
    return {"container": "raw", "encoding": encoding, "sample_rate": rate}


def _sdk_speak(address: str, encoding: str, rate: int, pieces: list[str]) -> tuple[bytes, list[Any]]:
    """The SDK's context helper: push each piece (continue), then no_more_inputs; every event back."""
    from cartesia import Cartesia

    client = Cartesia(api_key="not-checked", base_url=f"https://{address}")
    with client.tts.websocket_connect() as connection:
        ctx = connection.context(model_id="sonic-3", voice=VOICE, output_format=_format(encoding, rate),
                                 add_timestamps=True)  # fmt: skip
        for piece in pieces:
            ctx.push(piece)
        ctx.no_more_inputs()
        events = list(ctx.receive())
    audio = b"".join(base64.b64decode(e.data) for e in events if e.type == "chunk")
    return audio, events


async def _native_pcm(url: str, rate: int) -> bytes:
    exchange = await speak_whole(url, TEXT, {"format": {"codec": "pcm_s16le", "sample_rate": rate}, "seed": 7})
    return b"".join(exchange.audio)


async def test_the_sdk_streams_a_context_with_word_timestamps(
    tls_dialect_server: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, ca_file, _ = tls_dialect_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    audio, events = await asyncio.to_thread(_sdk_speak, address, "pcm_s16le", 24000, [TEXT])
    assert events[-1].type == "done"
    assert all(e.context_id == events[0].context_id for e in events)
    import ssl

    ctx = ssl.create_default_context(cafile=str(ca_file))
    async with websockets.connect(f"wss://{address}{STREAM_PATH}", ssl=ctx, max_size=None) as ws:
        from tests.helpers.ws import collect_until, recv_json, send

        await recv_json(ws)
        await send(ws, type="configure", format={"codec": "pcm_s16le", "sample_rate": 24000}, seed=7)
        await recv_json(ws)
        await send(ws, type="text", text=TEXT)
        await send(ws, type="end")
        native = b"".join((await collect_until(ws)).audio)
    assert audio == native
    stamps = [e.word_timestamps for e in events if e.type == "timestamps"]
    words = [w for s in stamps for w in s.words]
    starts = [t for s in stamps for t in s.start]
    assert [w.strip(".,") for w in words] == [w.strip(".,") for w in TEXT.split()]
    assert starts == sorted(starts) and starts[-1] < len(audio) / 2 / 24000


@pytest.mark.parametrize(("encoding", "rate"), [("pcm_f32le", 44100), ("pcm_mulaw", 8000), ("pcm_alaw", 16000)])
async def test_every_raw_encoding_carries_the_same_audio(
    dialect_server: tuple[str, Any], encoding: str, rate: int
) -> None:
    """Cartesia's wire messages over plain ``ws://`` (the SDK itself, over TLS, is the other tests'
    subject: its sync client, in a thread beside this in-process server's TLS, has hung in its
    opening handshake about once in a dozen runs, the server's loop idle; see the README)."""
    base = dialect_server[0].replace("http://", "ws://")
    s16 = await cartesia_pcm(base, "joe", TEXT, rate)
    other = await cartesia_pcm(base, "joe", TEXT, rate, encoding)
    reference = np.frombuffer(s16, dtype="<i2")
    if encoding == "pcm_f32le":
        decoded = np.round(np.frombuffer(other, dtype="<f4") * 32768).astype(np.int32)
        assert np.array_equal(decoded, reference)
    else:
        decode = mulaw_to_s16 if encoding == "pcm_mulaw" else alaw_to_s16
        decoded = decode(np.frombuffer(other, dtype=np.uint8)).astype(np.int32)
        assert len(decoded) == len(reference)
        assert np.max(np.abs(decoded - reference)) <= 1100  # G.711's own step at full scale


@pytest.mark.asr
async def test_the_audio_says_the_text(
    tls_dialect_server: tuple[str, Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamvox.bench.asr import transcribe, wer

    address, ca_file, _ = tls_dialect_server
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    pieces = [f"{w} " for w in TEXT.split()]  # an LLM's words, each with continue
    audio, _ = await asyncio.to_thread(_sdk_speak, address, "pcm_s16le", 16000, pieces)
    pcm = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768
    assert wer(TEXT, transcribe(pcm, 16000)) <= 0.10


async def test_flush_done_and_cancel_like_pipecat(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    engine = app[RUNTIME].engine
    async with websockets.connect(base.replace("http://", "ws://") + "/tts/websocket", max_size=None) as ws:
        request = {"model_id": "sonic-3", "voice": VOICE, "output_format": _format(), "context_id": "a",
                   "continue": True, "add_timestamps": True}  # fmt: skip
        await ws.send(json.dumps({**request, "transcript": "Hello there, "}))
        await ws.send(json.dumps({**request, "transcript": "this is the first turn. ", "flush": True}))
        kinds = []
        while "flush_done" not in kinds:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            assert message["context_id"] == "a" and "type" in message
            kinds.append(message["type"])
        assert "chunk" in kinds and "timestamps" in kinds
        await ws.send(json.dumps({**request, "transcript": " ".join([TEXT] * 5)}))
        await ws.send(json.dumps({"context_id": "a", "cancel": True}))
        cancelled_at = time.monotonic()
        late = []
        try:
            while True:
                late.append((json.loads(await asyncio.wait_for(ws.recv(), 0.5)), time.monotonic() - cancelled_at))
        except TimeoutError:
            pass
        chunks_after = [at for m, at in late if m["type"] == "chunk" and m["context_id"] == "a"]
        assert max(chunks_after, default=0.0) < 0.3, chunks_after  # only what was already on the wire
        assert not [m for m, _ in late if m["type"] == "done"]  # a cancelled context gets nothing more
        while engine.active_streams and time.monotonic() < cancelled_at + 2:
            await asyncio.sleep(0.01)
        assert engine.active_streams == 0
        # the socket lives on: a new context speaks
        await ws.send(json.dumps({**request, "context_id": "b", "transcript": "Still here.", "continue": False}))
        while (message := json.loads(await asyncio.wait_for(ws.recv(), 30)))["type"] != "done":
            assert message["context_id"] == "b"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{oops", "invalid_request"),
        (
            json.dumps(
                {
                    "context_id": "x",
                    "transcript": "hi",
                    "voice": {"mode": "id", "id": "nobody"},
                    "output_format": _format(),
                }
            ),
            "voice_not_found",
        ),  # fmt: skip
        (
            json.dumps({"context_id": "x", "transcript": "hi", "voice": VOICE, "output_format": _format("pcm_s24le")}),
            "invalid_request",
        ),  # fmt: skip
        (
            json.dumps({"context_id": "x", "transcript": "hi", "voice": VOICE, "output_format": _format(rate=96000)}),
            "invalid_request",
        ),  # fmt: skip
        (
            json.dumps({"context_id": "x", "transcript": 5, "voice": VOICE, "output_format": _format()}),
            "invalid_request",
        ),  # fmt: skip
        (
            json.dumps({"context_id": "x", "transcript": "a lone \ud800", "voice": VOICE, "output_format": _format()}),
            "invalid_request",
        ),  # fmt: skip
    ],
)
async def test_bad_requests_get_cartesia_errors_and_lose_nothing_else(
    dialect_server: tuple[str, Any], message: str, code: str
) -> None:
    base, _ = dialect_server
    native = base.replace("http://", "ws://") + STREAM_PATH
    reference = await _native_pcm(native, 16000)
    other = asyncio.create_task(_native_pcm(native, 16000))
    async with websockets.connect(base.replace("http://", "ws://") + "/tts/websocket") as ws:
        await ws.send(message)
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error" and error["error_code"] == code and error["message"] and error["done"]
        assert "context_id" in error
        request = {"model_id": "sonic-3", "voice": VOICE, "output_format": _format(), "context_id": "ok",
                   "transcript": "Fine.", "continue": False}  # fmt: skip
        await ws.send(json.dumps(request))
        while json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] != "done":
            pass
    assert await other == reference

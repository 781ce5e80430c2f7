"""Functional tests over a real server on a free loopback port, spoken to with `websockets`."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time

import aiohttp
import pytest
import websockets
from streamvox.bench.asr import transcribe, wer

from tests.helpers.audio import sf_read_stream
from tests.helpers.mp3 import decode_mp3
from tests.helpers.ws import Exchange, collect_until, recv_json, send

PARAGRAPH = (
    "Good morning! The weather today is sunny with a light breeze from the west. "
    "We expect temperatures to rise slowly through the afternoon, so bring a hat if you go outside."
)
LONG_TEXT = " ".join(
    [
        "This paragraph keeps the second session busy while the first one misbehaves.",
        "Every sentence becomes audio that is streamed in small packets.",
        "The server must keep this stream intact whatever the other client sends.",
    ]
)


async def speak(url: str, text: str, configure: dict | None = None, context_id: str | None = None) -> Exchange:
    """One context on a fresh connection: configure, send all text, end, collect."""
    async with websockets.connect(url, max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"
        if configure:
            await send(ws, type="configure", **configure)
            assert (await recv_json(ws))["type"] == "ready"
        extra = {"context_id": context_id} if context_id else {}
        await send(ws, type="text", text=text, **extra)
        await send(ws, type="end", **extra)
        return await collect_until(ws)


async def test_http_routes(server: str) -> None:
    base = server.replace("ws://", "http://").rsplit("/v1/", 1)[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        async with http.get(f"{base}/v1/voices") as r:
            voices = (await r.json())["voices"]
            assert voices == [
                {"id": "en_US-joe-medium", "language": "en_US", "sample_rate": 22050, "kind": "piper", "default": True}
            ]
        async with http.get(f"{base}/") as r:
            assert r.status == 200 and "streamvox" in await r.text()


async def test_ready_describes_the_negotiated_format(server: str) -> None:
    async with websockets.connect(server) as ws:
        ready = await recv_json(ws)
        assert ready["protocol"] == 1 and ready["voice"]["id"] == "en_US-joe-medium"
        assert ready["format"] == {
            "codec": "opus",
            "sample_rate": 48000,
            "channels": 1,
            "frame_ms": 20,
            "container": None,
        }
        await send(ws, type="configure", format={"codec": "pcm_s16le", "sample_rate": 16000})
        ready = await recv_json(ws)
        assert ready["format"]["codec"] == "pcm_s16le" and ready["format"]["sample_rate"] == 16000


@pytest.mark.asr
async def test_llm_paced_text_streams_intelligible_opus(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        received = asyncio.create_task(collect_until(ws))
        for word in PARAGRAPH.split(" "):
            await send(ws, type="text", text=word + " ")
            await asyncio.sleep(1 / 25)  # 25 words per second, like a fast LLM
        await send(ws, type="end")
        exchange = await received
    done = exchange.of_type("done")[0]
    segments = exchange.of_type("segment")
    assert len(segments) >= 3
    assert segments[0]["text"] == "Good morning!"
    assert [s["index"] for s in segments] == list(range(len(segments)))
    assert all(b["start_sample"] > a["start_sample"] for a, b in zip(segments, segments[1:], strict=False))
    assert len(exchange.audio) == math.ceil(done["samples"] / 960)
    audio = exchange.decode_opus()
    assert abs(len(audio) - done["samples"]) < 960 + 312
    assert done["ttfa_ms"] is not None and 0 < done["ttfa_ms"] < 5000
    assert 0 < done["rtf"] < 1
    assert done["seconds"] == pytest.approx(done["samples"] / 48000, abs=1e-3)
    transcript = transcribe(audio, 48000)
    score = wer(PARAGRAPH, transcript)
    print(f"WER {score:.3f}: {transcript}")
    assert score <= 0.15, transcript


@pytest.mark.parametrize(
    ("fmt", "rate", "bytes_per_sample"),
    [
        ("pcm_s16le", 22050, 2),
        ("pcm_s16le", 16000, 2),
        ("pcm_s16le", 8000, 2),
        ("pcm_s16le", 44100, 2),
        ("pcm_s16le", 12345, 2),
        ("mulaw_8000", 8000, 1),
        ("alaw_8000", 8000, 1),
    ],
)
async def test_pcm_formats_account_for_every_sample(server: str, fmt: str, rate: int, bytes_per_sample: int) -> None:
    exchange = await speak(server, PARAGRAPH, {"format": {"codec": fmt, "sample_rate": rate}, "noise": False})
    done = exchange.of_type("done")[0]
    assert done["sample_rate"] == rate
    assert sum(len(chunk) for chunk in exchange.audio) == done["samples"] * bytes_per_sample
    expected = done["model_samples"] * rate / 22050
    assert abs(done["samples"] - expected) <= 1


@pytest.mark.parametrize(("fmt", "rate"), [("ogg_opus", 48000), ("flac", 22050), ("flac", 16000)])
async def test_streamed_containers_decode_to_the_samples_sent(server: str, fmt: str, rate: int) -> None:
    exchange = await speak(server, PARAGRAPH, {"format": {"codec": fmt, "sample_rate": rate}, "noise": False})
    done = exchange.of_type("done")[0]
    decoded, decoded_rate = sf_read_stream(b"".join(exchange.audio))
    assert decoded_rate == rate == done["sample_rate"]
    assert len(decoded) == done["samples"]
    assert abs(done["samples"] - done["model_samples"] * rate / 22050) <= 1


@pytest.mark.parametrize("rate", [22050, 44100])
async def test_streamed_mp3_decodes_to_the_samples_sent_after_its_delay(server: str, rate: int) -> None:
    exchange = await speak(server, PARAGRAPH, {"format": {"codec": "mp3", "sample_rate": rate}, "noise": False})
    done = exchange.of_type("done")[0]
    decoded = decode_mp3(b"".join(exchange.audio), rate)
    frame = 1152 if rate >= 32000 else 576
    assert 0 <= len(decoded) - 1105 - done["samples"] < frame
    assert abs(done["samples"] - done["model_samples"] * rate / 22050) <= 1


STREAMING_TEXT = (
    "This first sentence is long enough to be synthesised in several vocoder windows, one after another. "
    "The rest only has to exist."
)


@pytest.mark.parametrize(
    "fmt", ["pcm_s16le", "ogg_opus", "flac", "mp3", "alaw_8000", {"codec": "pcm_s16le", "sample_rate": 8000}]
)
async def test_each_format_streams_a_segment_window_by_window(server: str, fmt: object) -> None:
    """Structural, not timed (first-byte latency per format is `bench latency`'s row): a format's
    encoder hands out bytes as each vocoder window finishes, so the long sentence's segment (the one
    after the first span, two windows) arrives in as many payloads before the next segment's
    ``segment`` event (the outbox keeps a context's events and audio in sample order), and they
    carry that segment's share of the bytes (a format that held its bytes back to a segment's or
    the stream's end fails)."""
    async with websockets.connect(server, max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"
        await send(ws, type="configure", format=fmt, noise=False)
        assert (await recv_json(ws))["type"] == "ready"
        await send(ws, type="text", text=STREAMING_TEXT)
        await send(ws, type="end")
        sizes: dict[int, list[int]] = {}
        starts: dict[int, int] = {}
        total = 0
        while True:
            message = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(message, bytes):
                total += len(message)
                sizes.setdefault(max(starts, default=0), []).append(len(message))
                continue
            event = json.loads(message)
            if event["type"] == "segment":
                starts[event["index"]] = event["start_sample"]
            if event["type"] == "done":
                break
    assert sorted(starts) == [0, 1, 2], "the text should have made a first span and two sentences"
    long_sentence = sizes[1]
    share = (starts[2] - starts[1]) / event["samples"]
    assert len(long_sentence) >= 2, long_sentence
    assert sum(long_sentence) >= 0.8 * share * total, (sum(long_sentence), share, total)


async def test_wav_stream_starts_with_a_streaming_header(server: str) -> None:
    exchange = await speak(server, "A short wave file.", {"format": "wav"})
    header, body = exchange.audio[0], b"".join(exchange.audio[1:])
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and len(header) == 44
    assert struct.unpack("<I", header[24:28])[0] == 22050
    assert len(body) == 2 * exchange.of_type("done")[0]["samples"]


async def test_session_audio_is_identical_alone_and_beside_fifteen_others(server: str) -> None:
    """DESIGN invariant: a seeded session's bytes do not depend on what runs beside it (the engine's
    workers interleave the 16 streams' windows in a load-dependent order)."""
    settings = {"seed": 1234}
    alone = await speak(server, PARAGRAPH, settings)
    crowd = await asyncio.gather(*(speak(server, PARAGRAPH, settings) for _ in range(16)))
    assert len(alone.audio) > 50
    for exchange in crowd:
        assert exchange.audio == alone.audio
    other_seed = await speak(server, PARAGRAPH, {"seed": 99})
    assert other_seed.audio != alone.audio


async def test_cancel_stops_on_a_frame_boundary_and_nothing_follows(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="text", text=LONG_TEXT * 3, context_id="first")
        await send(ws, type="flush", context_id="first")
        packets = 0
        while packets < 5:
            if isinstance(await asyncio.wait_for(ws.recv(), 30), bytes):
                packets += 1
        await send(ws, type="cancel", context_id="first")
        after_cancel = await collect_until(ws, kinds=("cancelled",))
        cancelled = after_cancel.of_type("cancelled")[0]
        assert cancelled["context_id"] == "first" and cancelled["reason"] == "client"
        sent_packets = packets + len(after_cancel.audio)
        assert cancelled["samples"] <= sent_packets * 960
        assert all(len(p) > 0 for p in after_cancel.audio)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1.0)  # nothing more for the cancelled context
        # The session lives on: a new context speaks.
        await send(ws, type="text", text="Still here.", context_id="second")
        await send(ws, type="end", context_id="second")
        second = await collect_until(ws)
        assert second.of_type("done")[0]["context_id"] == "second" and second.audio


BAD_INPUTS = [
    ("{oops", "invalid_json"),
    (json.dumps({"type": "shout"}), "unknown_type"),
    (json.dumps({"type": "text", "text": "x", "volume": 11}), "unknown_field"),
    (json.dumps({"type": "configure", "voice": "nobody"}), "unknown_voice"),
    (json.dumps({"type": "configure", "format": {"codec": "aac"}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "opus", "sample_rate": 16000}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "ogg_opus", "sample_rate": 24000}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "alaw_8000", "sample_rate": 16000}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "flac", "sample_rate": 96000}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "mp3", "sample_rate": 22000}}), "bad_format"),
    (json.dumps({"type": "configure", "format": {"codec": "pcm_s16le", "sample_rate": 4000}}), "bad_format"),
    (json.dumps({"type": "text", "text": "y" * 4001}), "text_too_long"),
    (json.dumps({"type": "text", "text": "z" * 9000}), "message_too_large"),
    (b"\x00\x01binary", "binary_not_supported"),
    (json.dumps({"type": "flush", "context_id": "never"}), "unknown_context"),
    ('{"type": "text", "text": "a lone \\ud800 surrogate"}', "invalid_value"),
]


async def test_bad_inputs_get_typed_errors_while_another_session_streams(server: str) -> None:
    settings = {"seed": 5}
    reference = await speak(server, LONG_TEXT, settings)
    busy = asyncio.create_task(speak(server, LONG_TEXT, settings))
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        for message, code in BAD_INPUTS:
            await ws.send(message)
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == code, (message[:40], error)
            assert error["fatal"] is False and error["message"]
        # Context limit: many small texts adding up past max_context_chars.
        for _ in range(2):
            await send(ws, type="text", text="word " * 600, context_id="big")
        await send(ws, type="text", text="word " * 600, context_id="big")
        error = await recv_json_skipping_audio(ws)
        assert error["code"] == "text_too_long" and error["context_id"] == "big"
        await send(ws, type="cancel", context_id="big")
        await collect_until(ws, kinds=("cancelled",))
        # Text after end of a context.
        await send(ws, type="text", text="Done soon.", context_id="short")
        await send(ws, type="end", context_id="short")
        await send(ws, type="text", text="Too late.", context_id="short")
        late = await collect_until(ws, kinds=("error",))
        assert late.of_type("error")[0]["code"] == "context_ended"
        await collect_until(ws)
        # The session still works after all of that.
        await send(ws, type="text", text="All good.", context_id="after")
        await send(ws, type="end", context_id="after")
        assert (await collect_until(ws)).of_type("done")
    other = await busy
    assert other.audio == reference.audio
    assert other.of_type("done") and not other.of_type("error")


async def recv_json_skipping_audio(ws: websockets.ClientConnection) -> dict:
    while True:
        message = await asyncio.wait_for(ws.recv(), 30)
        if isinstance(message, str):
            event = json.loads(message)
            if event["type"] != "segment":
                return event


async def test_a_voice_given_by_path_is_listed_and_served(aiohttp_server, registry, tmp_path) -> None:
    from streamvox.engine.backends.piper.backend import bundled_voice_path
    from streamvox.engine.backends.piper.voice import PiperVoice
    from streamvox.engine.registry import VoiceRegistry
    from streamvox.stream_server.app import STREAM_PATH, create_app
    from streamvox.stream_server.config import ServerConfig

    src = bundled_voice_path()
    model = tmp_path / "en_US-second-medium.onnx"
    model.symlink_to(src)
    (tmp_path / "en_US-second-medium.onnx.json").write_bytes(src.with_name(src.name + ".json").read_bytes())
    voices = VoiceRegistry()
    voices.add(registry.get(None))
    voices.add(PiperVoice.load(model))
    srv = await aiohttp_server(create_app(ServerConfig(), voices), host="127.0.0.1")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{srv.port}/v1/voices") as r:
            assert [v["id"] for v in (await r.json())["voices"]] == ["en_US-joe-medium", "en_US-second-medium"]
    exchange = await speak(f"ws://127.0.0.1:{srv.port}{STREAM_PATH}", "Second voice.", {"voice": "en_US-second-medium"})
    assert exchange.of_type("done") and exchange.audio


async def test_busy_context_and_configure_rules(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="text", text=LONG_TEXT, context_id="a")
        await send(ws, type="text", text="Other.", context_id="b")
        assert (await recv_json_skipping_audio(ws))["code"] == "context_busy"
        await send(ws, type="configure", format="pcm_s16le")
        assert (await recv_json_skipping_audio(ws))["code"] == "context_busy"
        await send(ws, type="end", context_id="a")
        await collect_until(ws)
        await send(ws, type="text", text="Reused.", context_id="a")
        assert (await recv_json(ws))["code"] == "context_ended"


async def test_oversized_frame_closes_with_1009(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await ws.send("x" * (1024 * 1024 + 10))
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_client_disconnect_mid_stream_frees_the_engine(server: str, aiohttp_server) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="text", text=LONG_TEXT * 5)
        await send(ws, type="flush")
        while not isinstance(await ws.recv(), bytes):
            pass
    # The next client is served promptly and correctly.
    exchange = await speak(server, "Next client.")
    assert exchange.of_type("done")


async def test_an_idle_session_is_closed_and_a_keepalive_or_speech_keeps_it_open(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", idle_timeout_s=0.6)
        assert (await recv_json(ws))["type"] == "ready"
        for _ in range(4):  # 1.2 s of keepalives, each inside the limit
            await asyncio.sleep(0.3)
            await send(ws, type="keepalive")
        await send(ws, type="text", text=LONG_TEXT)  # speaks for longer than the limit
        await send(ws, type="end")
        assert (await collect_until(ws)).of_type("done")
        started = time.monotonic()
        error = await recv_json(ws, timeout=10)
        assert error == {
            "type": "error",
            "code": "idle_timeout",
            "message": "no message for 0.6 s; closing",
            "fatal": True,
        }
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1000,
            "idle_timeout",
        )
        assert time.monotonic() - started < 2.0

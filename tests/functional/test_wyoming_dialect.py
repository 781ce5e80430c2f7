"""The Wyoming dialect (Home Assistant), driven by the ``wyoming`` package's own TCP client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from streamvox.stream_server.app import RUNTIME, STREAM_PATH
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from tests.helpers.ws import speak_whole

pytestmark = pytest.mark.dialect

TEXT = "The quick brown fox jumps over the lazy dog. Then it runs back home before the rain starts."


def _client(app: Any) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", app[RUNTIME].wyoming_port)


async def _read_audio(client: AsyncTcpClient, until: str = AudioStop.__name__) -> tuple[AudioStart, bytes, list[str]]:
    start, audio, kinds = None, b"", []
    while True:
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None
        kinds.append(event.type)
        if AudioStart.is_type(event.type):
            start = AudioStart.from_event(event)
        elif AudioChunk.is_type(event.type):
            audio += AudioChunk.from_event(event).audio
        elif Error.is_type(event.type):
            raise AssertionError(Error.from_event(event).text)
        if (until == "stopped" and SynthesizeStopped.is_type(event.type)) or (
            until == AudioStop.__name__ and AudioStop.is_type(event.type)
        ):
            assert start is not None
            return start, audio, kinds


async def _native(base: str) -> bytes:
    url = base.replace("http://", "ws://") + STREAM_PATH
    return b"".join((await speak_whole(url, TEXT, {"format": "pcm_s16le", "seed": 7})).audio)


async def test_describe_lists_our_voices_and_streaming(dialect_server: tuple[str, Any]) -> None:
    _, app = dialect_server
    async with _client(app) as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await asyncio.wait_for(client.read_event(), 10))
    program = info.tts[0]
    assert program.supports_synthesize_streaming
    assert "en_US-joe-medium" in [v.name for v in program.voices]


async def test_one_shot_synthesize_is_the_native_pcm(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    async with _client(app) as client:
        await client.write_event(Synthesize(text=TEXT, voice=SynthesizeVoice(name="en_US-joe-medium")).event())
        start, audio, _ = await _read_audio(client)
    assert (start.rate, start.width, start.channels) == (22050, 2, 1)
    assert audio == await _native(base)


async def test_streaming_chunks_that_split_words(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    pieces = [TEXT[i : i + 7] for i in range(0, len(TEXT), 7)]  # cuts through words
    async with _client(app) as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="joe")).event())
        for piece in pieces:
            await client.write_event(SynthesizeChunk(text=piece).event())
        await client.write_event(Synthesize(text=TEXT).event())  # Home Assistant's fallback copy: ignored
        await client.write_event(SynthesizeStop().event())
        _, audio, kinds = await _read_audio(client, "stopped")
        assert kinds[-2:] == [AudioStop().event().type, SynthesizeStopped().event().type]
        # the connection serves another request afterwards
        await client.write_event(Synthesize(text="And again.").event())
        _, again, _ = await _read_audio(client)
    assert len(again) > 0
    pcm = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768
    native = np.frombuffer(await _native(base), dtype="<i2")
    assert abs(len(pcm) - len(native)) < 0.25 * len(native)  # segmented from pieces, not from one text


@pytest.mark.asr
async def test_streamed_audio_says_the_text(dialect_server: tuple[str, Any]) -> None:
    from streamvox.bench.asr import transcribe, wer

    _, app = dialect_server
    async with _client(app) as client:
        await client.write_event(SynthesizeStart().event())
        for i in range(0, len(TEXT), 5):
            await client.write_event(SynthesizeChunk(text=TEXT[i : i + 5]).event())
        await client.write_event(SynthesizeStop().event())
        start, audio, _ = await _read_audio(client, "stopped")
    pcm = np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768
    assert wer(TEXT, transcribe(pcm, start.rate)) <= 0.10


async def test_bad_requests_get_wyoming_errors_and_the_connection_lives_on(dialect_server: tuple[str, Any]) -> None:
    base, app = dialect_server
    reference = await _native(base)
    other = asyncio.create_task(_native(base))
    async with _client(app) as client:
        for event, code in (
            (Synthesize(text="hi", voice=SynthesizeVoice(name="nobody")).event(), "unknown_voice"),
            (SynthesizeChunk(text="stray").event(), "out_of_order"),
            (SynthesizeStop().event(), "out_of_order"),
        ):
            await client.write_event(event)
            reply = await asyncio.wait_for(client.read_event(), 10)
            assert reply is not None and Error.is_type(reply.type)
            assert Error.from_event(reply).code == code
        # a JSON-escaped lone surrogate, written raw (the wyoming client cannot encode one)
        data = json.dumps({"text": "a lone \ud800"}).encode()
        assert client._writer is not None
        client._writer.write(json.dumps({"type": "synthesize", "data_length": len(data)}).encode() + b"\n" + data)
        reply = await asyncio.wait_for(client.read_event(), 10)
        assert reply is not None and Error.is_type(reply.type) and Error.from_event(reply).code == "invalid_text"
        await client.write_event(Synthesize(text="Fine.").event())
        _, audio, _ = await _read_audio(client)
        assert audio
    assert await other == reference

"""Dia voices in the engine and the server: batched decoder steps, slots freed on cancel, speaker
tags through the segmenter, the native protocol and a compatible dialect.  Random tiny voices
(they speak noise) in the real layout, written by ``streamvox.bench.dia_voice``."""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest
import torch
import websockets
from streamvox.bench.dia_voice import write_dia_voice
from streamvox.engine.api import SynthesisParams, VoiceLoadError
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacConfig
from streamvox.engine.backends.dia.voice import DiaVoice
from streamvox.engine.core import EngineCore
from streamvox.engine.events import AudioChunk, StreamAborted, StreamDone, StreamFailed
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import STREAM_PATH, create_app
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.synthesis import synthesize

from tests.helpers.ws import collect_until, recv_json, send

TEXT = "[S1] Hello there, how are you today? [S2] I am fine, thank you. [S1] Good to hear."
SMALL_CHUNKS = {"first": 4, "growth": 2.0, "cap": 16}


@pytest.fixture(scope="module")
def dia_voice(tmp_path_factory: pytest.TempPathFactory) -> DiaVoice:
    """Ends each segment after 30 to 90 rows, depending on the seed."""
    directory = tmp_path_factory.mktemp("dia") / "dialogue"
    settings = {"id": "tiny-dia", "max_streams": 3, "max_rows": 300, "chunks": SMALL_CHUNKS}
    write_dia_voice(directory, DiaConfig.tiny(), DacConfig.tiny(), seed=1, std=0.3, eos_scale=3.0, voice=settings)
    voice = DiaVoice.load(directory)
    voice.warm_up()
    return voice


@pytest.fixture(scope="module")
def endless_voice(tmp_path_factory: pytest.TempPathFactory) -> DiaVoice:
    """Never ends on its own: each segment runs to its 400-row cap."""
    directory = tmp_path_factory.mktemp("dia") / "endless"
    settings = {"id": "tiny-dia-endless", "max_streams": 1, "max_rows": 400, "chunks": SMALL_CHUNKS}
    write_dia_voice(directory, DiaConfig.tiny(), DacConfig.tiny(), seed=2, std=0.3, voice=settings)
    return DiaVoice.load(directory)


@pytest.fixture(scope="module")
def dia_voices(dia_voice: DiaVoice, endless_voice: DiaVoice) -> VoiceRegistry:
    voices = VoiceRegistry()
    voices.add(dia_voice)
    voices.add(endless_voice)
    return voices


@pytest.fixture()
def engine(make_engine: Callable[..., EngineCore], dia_voices: VoiceRegistry) -> EngineCore:
    return make_engine(voices=dia_voices)


def free_slots(voices: VoiceRegistry, voice: DiaVoice) -> int:
    return voices.backend("dia").free_slots(voice)  # type: ignore[attr-defined]


def test_concurrent_streams_share_batched_steps_and_keep_their_audio(
    engine: EngineCore, dia_voices: VoiceRegistry, dia_voice: DiaVoice
) -> None:
    alone = synthesize(engine, dia_voice.id, TEXT, SynthesisParams(seed=5)).audio
    assert len(alone) > 0
    results: list[np.ndarray | None] = [None] * 4

    def one(i: int) -> None:
        results[i] = synthesize(engine, dia_voice.id, TEXT, SynthesisParams(seed=5)).audio

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert max(engine.batch_sizes) >= 2, engine.batch_sizes
    for audio in results:
        assert audio is not None and np.array_equal(audio, alone)
    assert free_slots(dia_voices, dia_voice) == 3
    other = synthesize(engine, dia_voice.id, TEXT, SynthesisParams(seed=6)).audio
    assert not np.array_equal(other, alone)


def test_cancel_frees_the_slot_at_once(engine: EngineCore, dia_voices: VoiceRegistry, endless_voice: DiaVoice) -> None:
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine.open("endless", endless_voice.id, SynthesisParams(seed=1), events.put)
    engine.add_segment("endless", 0, "[S1] A line this voice never finishes on its own.")
    engine.finish("endless")
    while not isinstance(events.get(timeout=60), AudioChunk):
        pass
    assert free_slots(dia_voices, endless_voice) == 0
    engine.abort("endless")
    while not isinstance(event := events.get(timeout=60), StreamAborted):
        assert not isinstance(event, (StreamDone, StreamFailed))
    deadline = time.monotonic() + 5
    while free_slots(dia_voices, endless_voice) != 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert free_slots(dia_voices, endless_voice) == 1
    result = synthesize(engine, endless_voice.id, "[S2] Short.", SynthesisParams(seed=2))
    assert len(result.audio) == (400 - 15 - 1) * 512  # the slot's cache was cleared: a full run again


@pytest.fixture()
async def dia_server(aiohttp_server: Any, dia_voice: DiaVoice) -> tuple[str, Any]:
    """A real server with the Dia voice (and Wyoming on a free port); its ``host:port`` and app."""
    voices = VoiceRegistry.load(warm_up=False)
    voices.add(dia_voice)
    app = create_app(ServerConfig(default_seed=7, wyoming_port=0), voices)
    srv = await aiohttp_server(app, host="127.0.0.1")
    return f"127.0.0.1:{srv.port}", app


async def native_pcm(server: str, text: str, rate: int, seed: int, words: bool = False) -> tuple[bytes, Any]:
    async with websockets.connect(f"ws://{server}{STREAM_PATH}", max_size=None) as ws:
        await recv_json(ws)
        fmt = {"codec": "pcm_s16le", "sample_rate": rate}
        await send(ws, type="configure", voice="tiny-dia", format=fmt, seed=seed, timestamps="word")
        ready = await recv_json(ws)
        assert ready["voice"]["sample_rate"] == 44100 and ready["format"]["sample_rate"] == rate
        if words:
            for word in text.split():
                await send(ws, type="text", text=word + " ")
        else:
            await send(ws, type="text", text=text)
        await send(ws, type="end")
        exchange = await collect_until(ws)
    return b"".join(exchange.audio), exchange


async def test_the_voice_is_listed_and_speaks_a_dialogue_through_the_protocol(dia_server: tuple[str, Any]) -> None:
    server, _ = dia_server
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{server}/v1/voices") as response:
            listed = {v["id"]: v for v in (await response.json())["voices"]}
    assert listed["tiny-dia"] == {
        "id": "tiny-dia",
        "language": "en",
        "sample_rate": 44100,
        "kind": "dia",
        "default": False,
    }
    pcm, exchange = await native_pcm(server, TEXT, 44100, seed=3, words=True)
    done = exchange.of_type("done")[0]
    assert len(pcm) == 2 * done["samples"] > 0
    segments = [e["text"] for e in exchange.of_type("segment")]
    assert "[S2] I am fine, thank you." in segments and "[S1] Good to hear." in segments
    assert all(s.count("[") == s.count("]") for s in segments)  # no tag split across spans
    words = [w["text"] for e in exchange.of_type("words") for w in e["words"]]
    assert (
        "S1" not in words
        and "S2" not in words
        and "Hello" in words
        and all(e["estimated"] for e in exchange.of_type("words"))
    )


async def test_the_openai_dialect_gives_the_native_protocols_pcm(dia_server: tuple[str, Any]) -> None:
    """The same text, voice and seed (the server's default) through the real ``openai`` client."""
    server, _ = dia_server
    text = "[S1] Hello there. [S2] Hi."
    async with (
        openai.AsyncOpenAI(base_url=f"http://{server}/v1", api_key="not-checked", max_retries=0) as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="tiny-dia", input=text, response_format="pcm"
        ) as response,
    ):
        assert response.status_code == 200
        dialect = b"".join([chunk async for chunk in response.iter_bytes()])
    native, _ = await native_pcm(server, text, 24000, seed=7)
    assert len(dialect) > 0 and dialect == native


async def elevenlabs_http(server: str, app: Any, text: str) -> bytes:
    url = f"http://{server}/v1/text-to-speech/tiny-dia/stream?output_format=pcm_24000"
    async with aiohttp.ClientSession() as http, http.post(url, json={"text": text, "model_id": "x"}) as response:
        assert response.status == 200, await response.text()
        return await response.read()


async def cartesia_ws(server: str, app: Any, text: str) -> bytes:
    request = {
        "model_id": "sonic-2",
        "transcript": text,
        "voice": {"mode": "id", "id": "tiny-dia"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "context_id": "dia-1",
    }
    audio = b""
    async with websockets.connect(f"ws://{server}/tts/websocket?cartesia_version=2024-06-10") as ws:
        await ws.send(json.dumps(request))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert message["type"] != "error", message
            if message["type"] == "chunk":
                audio += base64.b64decode(message["data"])
            if message["type"] == "done":
                return audio


async def wyoming_tcp(server: str, app: Any, text: str) -> bytes:
    from streamvox.stream_server.app import RUNTIME
    from wyoming.audio import AudioChunk as WyomingChunk
    from wyoming.audio import AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize, SynthesizeVoice

    async with AsyncTcpClient("127.0.0.1", app[RUNTIME].wyoming_port) as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="tiny-dia")).event())
        audio = b""
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None
            if AudioStart.is_type(event.type):
                assert AudioStart.from_event(event).rate == 44100
            elif WyomingChunk.is_type(event.type):
                audio += WyomingChunk.from_event(event).audio
            elif AudioStop.is_type(event.type):
                return audio


@pytest.mark.parametrize(
    ("dialect", "rate"),
    [(elevenlabs_http, 24000), (cartesia_ws, 24000), (wyoming_tcp, 44100)],
    ids=["elevenlabs", "cartesia", "wyoming"],
)
async def test_every_other_dialect_gives_the_native_protocols_pcm(
    dia_server: tuple[str, Any], dialect: Callable[[str, Any, str], Any], rate: int
) -> None:
    """ElevenLabs' HTTP stream, Cartesia's socket (raw JSON) and Wyoming's client, each at its rate."""
    server, app = dia_server
    text = "[S1] Hello there. [S2] Hi."
    audio = await dialect(server, app, text)
    native, _ = await native_pcm(server, text, rate, seed=7)
    assert len(audio) > 0 and audio == native


def test_voice_json_settings_are_checked_at_load(tmp_path: Any) -> None:
    directory = write_dia_voice(tmp_path / "dia", DiaConfig.tiny(), DacConfig.tiny(), seed=0)
    bad = {
        "dtype": ({"dtype": "float16"}, "dtype must be float32 or bfloat16"),
        "device": ({"device": "tpu"}, "not a torch device|only cpu and cuda"),
        "key": ({"devices": "cpu"}, "unknown voice.json keys: devices"),
        "step": ({"step": "jit"}, "step must be one of"),
        "graph": ({"step": "cuda-graph"}, "needs a cuda device"),
    }
    if not torch.cuda.is_available():
        bad["cuda"] = ({"device": "cuda:0"}, "CUDA is not available")
    for settings, message in bad.values():
        (directory / "voice.json").write_text(json.dumps(settings))
        with pytest.raises(VoiceLoadError, match=message):
            DiaVoice.load(directory)
    (directory / "voice.json").write_text(json.dumps({"device": "cpu", "max_rows": 64}))
    assert DiaVoice.load(directory).network.device.type == "cpu"

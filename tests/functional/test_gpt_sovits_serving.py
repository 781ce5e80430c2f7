"""GPT-SoVITS voices in the engine and the server: batched T2S steps, slots, streaming = offline,
and the same protocol as the bundled voice.  Random tiny voices (they speak noise) in the real
file formats, written by ``streamvox.bench.random_voice``."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch
import websockets
from streamvox.bench.random_voice import write_voice
from streamvox.engine.api import SynthesisParams, VoiceLoadError
from streamvox.engine.ar.threads import UNIT_THREADS
from streamvox.engine.backends.gpt_sovits.voice import GptSovitsVoice
from streamvox.engine.core import EngineCore
from streamvox.engine.events import AudioChunk, StreamAborted, StreamDone, StreamFailed
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import STREAM_PATH, create_app
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.synthesis import synthesize

from tests.helpers.ws import collect_until, recv_json, send

SMALL_CHUNKS = {"first": 4, "growth": 2.0, "cap": 16, "lookahead": 2, "left_context": 8, "overlap": 1}
TEXT = "Hello there. This is the second sentence of a short reply."


@pytest.fixture(scope="module")
def short_voice(tmp_path_factory: pytest.TempPathFactory) -> GptSovitsVoice:
    """Ends each segment soon after the 11-step end-of-speech ban."""
    directory = tmp_path_factory.mktemp("voices") / "tiny-short"
    write_voice(
        directory, "tiny", seed=1, eos_scale=50.0, settings={"max_streams": 4, "max_len": 256, "chunks": SMALL_CHUNKS}
    )
    voice = GptSovitsVoice.load(directory)
    voice.warm_up()
    return voice


@pytest.fixture(scope="module")
def long_voice(tmp_path_factory: pytest.TempPathFactory) -> GptSovitsVoice:
    """Never predicts end of speech: each segment runs to its cache's cap (about 150 tokens)."""
    directory = tmp_path_factory.mktemp("voices") / "tiny-long"
    write_voice(directory, "tiny", seed=2, settings={"max_streams": 2, "max_len": 256, "chunks": SMALL_CHUNKS})
    return GptSovitsVoice.load(directory)


@pytest.fixture(scope="module")
def ar_voices(short_voice: GptSovitsVoice, long_voice: GptSovitsVoice) -> VoiceRegistry:
    voices = VoiceRegistry()
    voices.add(short_voice)
    voices.add(long_voice)
    return voices


@pytest.fixture()
def engine(make_engine: Callable[..., EngineCore], ar_voices: VoiceRegistry) -> EngineCore:
    return make_engine(voices=ar_voices)


def free_slots(voices: VoiceRegistry, voice: GptSovitsVoice) -> int:
    return voices.backend("gpt-sovits").free_slots(voice)  # type: ignore[attr-defined]


def run_streams(engine: EngineCore, voice: GptSovitsVoice, count: int, seed: int = 5) -> list[np.ndarray]:
    results: list[np.ndarray | None] = [None] * count

    def one(i: int) -> None:
        results[i] = synthesize(engine, voice.id, TEXT, SynthesisParams(seed=seed)).audio

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_concurrent_streams_share_batched_steps_and_keep_their_audio(
    engine: EngineCore, ar_voices: VoiceRegistry, short_voice: GptSovitsVoice
) -> None:
    alone = synthesize(engine, short_voice.id, TEXT, SynthesisParams(seed=5)).audio
    assert len(alone) > 0
    crowd = run_streams(engine, short_voice, 4)
    assert max(engine.batch_sizes) >= 2, engine.batch_sizes
    for audio in crowd:
        assert np.array_equal(audio, alone)
    assert free_slots(ar_voices, short_voice) == 4
    other = synthesize(engine, short_voice.id, TEXT, SynthesisParams(seed=6)).audio
    assert not np.array_equal(other, alone)


def test_units_run_torch_on_one_thread_and_leave_the_loading_threads_count(
    engine: EngineCore, short_voice: GptSovitsVoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers run side by side, one per core: a unit on torch's default (a thread per core)
    would put more busy threads than cores on the machine (see ``engine/ar/threads.py``)."""
    torch.set_num_threads(2)
    seen: list[int] = []
    real_step = short_voice.step

    def counting_step(segments: Any) -> None:
        seen.append(torch.get_num_threads())
        real_step(segments)

    monkeypatch.setattr(short_voice, "step", counting_step)
    assert len(synthesize(engine, short_voice.id, TEXT, SynthesisParams(seed=5)).audio) > 0
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2


def test_a_voice_warms_up_on_the_units_thread_count_and_gives_the_callers_back(
    short_voice: GptSovitsVoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(2)
    seen: list[int] = []
    real_decode = short_voice.sovits.decode

    def counting_decode(*args: Any, **kwargs: Any) -> torch.Tensor:
        seen.append(torch.get_num_threads())
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(short_voice.sovits, "decode", counting_decode)
    short_voice.warm_up()
    assert seen and set(seen) == {UNIT_THREADS}
    assert torch.get_num_threads() == 2


def test_more_streams_than_slots_wait_for_one(
    engine: EngineCore, ar_voices: VoiceRegistry, short_voice: GptSovitsVoice
) -> None:
    audios = run_streams(engine, short_voice, 7)
    assert all(len(a) > 0 for a in audios)
    assert free_slots(ar_voices, short_voice) == 4


def test_streamed_audio_equals_the_offline_run(engine: EngineCore, short_voice: GptSovitsVoice) -> None:
    """One segment through the engine (steps interleaved with chunk decodes) against the same
    segment generated to its end first and vocoded afterwards, on as many torch threads as a
    unit runs on (another count rounds the floats differently: about 1e-6 apart here)."""
    text = "Just one sentence here."
    streamed = synthesize(engine, short_voice.id, text, SynthesisParams(seed=8)).audio
    slot = 0  # the engine is idle: no stream holds a slot
    threads = torch.get_num_threads()
    torch.set_num_threads(UNIT_THREADS)
    try:
        segment = short_voice.start_segment(0, slot, text, seed=8 * 1_000_003)
        while segment.generating:
            short_voice.step([segment])
        pieces = []
        while segment.vocoder.pending():
            pieces.append(segment.vocoder.decode())
        pieces.append(segment.vocoder.finish())
    finally:
        short_voice.t2s.release(slot)
        torch.set_num_threads(threads)
    offline = np.concatenate(pieces)
    assert len(offline) == len(segment.tokens.tokens) * 1280 > 0
    assert np.array_equal(streamed, offline)


def test_abort_mid_generation_frees_the_slot(
    engine: EngineCore, ar_voices: VoiceRegistry, long_voice: GptSovitsVoice
) -> None:
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine.open("long", long_voice.id, SynthesisParams(seed=1), events.put)
    engine.add_segment("long", 0, "A sentence this voice will never finish on its own.")
    engine.finish("long")
    while not isinstance(events.get(timeout=60), AudioChunk):
        pass
    assert free_slots(ar_voices, long_voice) == 1
    engine.abort("long")
    while not isinstance(event := events.get(timeout=60), StreamAborted):
        assert not isinstance(event, (StreamDone, StreamFailed))
    deadline = time.monotonic() + 30
    while free_slots(ar_voices, long_voice) != 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert free_slots(ar_voices, long_voice) == 2
    result = synthesize(engine, long_voice.id, "Short.", SynthesisParams(seed=2))
    assert len(result.audio) % 1280 == 0 and len(result.audio) > 100 * 1280


@pytest.fixture()
async def ar_server(aiohttp_server: Any, short_voice: GptSovitsVoice) -> str:
    voices = VoiceRegistry.load(warm_up=False)
    voices.add(short_voice)
    srv = await aiohttp_server(create_app(ServerConfig(), voices), host="127.0.0.1")
    return f"127.0.0.1:{srv.port}"


async def test_the_voice_is_listed_and_streams_through_the_protocol(
    ar_server: str, short_voice: GptSovitsVoice
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{ar_server}/v1/voices") as r:
            listed = {v["id"]: v for v in (await r.json())["voices"]}
    assert listed[short_voice.id] == {
        "id": short_voice.id,
        "language": "en",
        "sample_rate": 32000,
        "kind": "gpt-sovits",
        "default": False,
    }
    async with websockets.connect(f"ws://{ar_server}{STREAM_PATH}", max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", voice=short_voice.id, format={"codec": "pcm_s16le"}, seed=3)
        ready = await recv_json(ws)
        assert ready["voice"]["sample_rate"] == 32000 and ready["format"]["sample_rate"] == 32000
        for word in TEXT.split():
            await send(ws, type="text", text=word + " ")
        await send(ws, type="end")
        exchange = await collect_until(ws)
    done = exchange.of_type("done")[0]
    assert sum(len(a) for a in exchange.audio) == 2 * done["samples"] > 0
    assert done["rtf"] > 0 and exchange.of_type("segment")


async def test_its_word_timings_are_estimates_that_cover_the_text(ar_server: str, short_voice: GptSovitsVoice) -> None:
    async with websockets.connect(f"ws://{ar_server}{STREAM_PATH}", max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", voice=short_voice.id, format={"codec": "pcm_s16le"}, seed=3, timestamps="word")
        await recv_json(ws)
        await send(ws, type="text", text=TEXT)
        await send(ws, type="end")
        exchange = await collect_until(ws)
    events = exchange.of_type("words")
    assert events and all(e["estimated"] for e in events)
    words = [w for e in events for w in e["words"]]
    assert [w["text"] for w in words] == [w.strip(".,!?") for w in TEXT.split()]
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(words, words[1:], strict=False))
    assert words[-1]["end_s"] <= exchange.of_type("done")[0]["seconds"] + 1e-3


async def test_speed_is_refused_for_the_voice_and_the_session_lives_on(
    ar_server: str, short_voice: GptSovitsVoice
) -> None:
    async with websockets.connect(f"ws://{ar_server}{STREAM_PATH}", max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", voice=short_voice.id, speed=1.5)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_value"
        await send(ws, type="configure", voice=short_voice.id)
        assert (await recv_json(ws))["type"] == "ready"
        await send(ws, type="text", text="Still here.")
        await send(ws, type="end")
        exchange = await collect_until(ws)
    assert exchange.of_type("done") and exchange.audio


def test_a_broken_voice_directory_is_a_clear_error(tmp_path: Path) -> None:
    directory = write_voice(tmp_path / "v", "tiny", settings={"colour": "blue"})
    with pytest.raises(VoiceLoadError, match="unknown keys"):
        GptSovitsVoice.load(directory)
    write_voice(directory, "tiny")
    (directory / "sovits.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(VoiceLoadError, match="sovits.pth"):
        GptSovitsVoice.load(directory)


@pytest.mark.reference
def test_prompt_tokens_can_come_from_a_cnhubert_model(tmp_path: Path) -> None:
    import json

    from tests.helpers.gsv_runner import reference
    from tests.helpers.sovits import TINY_HUBERT

    directory = write_voice(tmp_path / "v", "tiny")
    reference({"op": "make_hubert", "config": TINY_HUBERT, "seed": 4, "directory": str(directory / "hubert")}, tmp_path)
    spec = json.loads((directory / "voice.json").read_text())
    del spec["prompt_tokens"]
    spec["cnhubert"] = "hubert"
    (directory / "voice.json").write_text(json.dumps(spec))
    voice = GptSovitsVoice.load(directory)
    assert len(voice.prompt_tokens) == (int(3.5 * 16000) + 9600) // 320 // 2  # 25 per second, padding included
    del spec["cnhubert"]
    (directory / "voice.json").write_text(json.dumps(spec))
    with pytest.raises(VoiceLoadError, match="prompt_tokens"):
        GptSovitsVoice.load(directory)


def test_voice_json_sections_take_exactly_their_dataclass_fields(tmp_path: Path) -> None:
    chunks = {**SMALL_CHUNKS, "bucket": 8}  # every ChunkSchedule field, bucket included
    voice = GptSovitsVoice.load(write_voice(tmp_path / "ok", "tiny", settings={"chunks": chunks}))
    assert voice.config.chunks.bucket == 8
    with pytest.raises(VoiceLoadError, match="chunks takes first, growth, cap"):
        GptSovitsVoice.load(write_voice(tmp_path / "bad", "tiny", settings={"chunks": {"size": 8}}))
    with pytest.raises(VoiceLoadError, match="sampling takes top_k"):
        GptSovitsVoice.load(write_voice(tmp_path / "bad2", "tiny", settings={"sampling": {"top_z": 1}}))


def test_a_voice_on_the_fixed_shape_compiled_step_speaks_as_on_the_variable_one(
    make_engine: Callable[..., EngineCore], tmp_path: Path
) -> None:
    """``"step": "compile"`` (what a GPU voice runs, compiled here for the CPU) through the engine:
    the same seeded audio as the default step, several streams batched together."""
    settings = {"max_streams": 3, "max_len": 256, "chunks": SMALL_CHUNKS}
    voices = VoiceRegistry()
    for name, step in (("variable", "variable"), ("compiled", "compile")):
        directory = write_voice(tmp_path / name, "tiny", seed=1, eos_scale=50.0, settings={**settings, "step": step})
        voice = GptSovitsVoice.load(directory)
        voice.warm_up()
        voices.add(voice)
    engine = make_engine(voices=voices)
    variable, compiled = voices.get("variable"), voices.get("compiled")
    assert compiled.stepper is not compiled.t2s and variable.stepper is variable.t2s
    expected = synthesize(engine, "variable", TEXT, SynthesisParams(seed=5)).audio
    for audio in run_streams(engine, compiled, 3):
        assert len(audio) == len(expected) > 0
        np.testing.assert_allclose(audio, expected, atol=1e-4)


@pytest.mark.parametrize(("setting", "dtype"), [("bf16_cache", torch.bfloat16), ("int8_cache", torch.int8)])
def test_a_voice_with_a_smaller_cache_speaks_and_batches_its_streams(
    make_engine: Callable[..., EngineCore], tmp_path: Path, setting: str, dtype: torch.dtype
) -> None:
    """``"bf16_cache": true`` or ``"int8_cache": true``: the T2S cache holds that type, and concurrent
    seeded streams (batched steps through the fused kernel) each give the same audio as one stream
    alone."""
    settings = {"max_streams": 3, "max_len": 256, "chunks": SMALL_CHUNKS, setting: True}
    voice = GptSovitsVoice.load(write_voice(tmp_path / setting, "tiny", seed=1, eos_scale=50.0, settings=settings))
    assert voice.t2s.kv_cache.dtype == dtype and getattr(voice.config, setting)
    voice.warm_up()
    voices = VoiceRegistry()
    voices.add(voice)
    engine = make_engine(voices=voices)
    alone = synthesize(engine, voice.id, TEXT, SynthesisParams(seed=5)).audio
    assert len(alone) > 0 and np.isfinite(alone).all()
    for audio in run_streams(engine, voice, 3):
        np.testing.assert_array_equal(audio, alone)


def test_device_dtype_and_step_are_checked_at_load(tmp_path: Path) -> None:
    bad = {
        "dtype": ({"dtype": "float64"}, "dtype must be one of"),
        "step": ({"step": "jit"}, "step must be one of"),
        "graph": ({"step": "cuda-graph"}, "needs a cuda device"),
        "device": ({"device": "tpu:0"}, "not a torch device|only cpu and cuda"),
        "int8": ({"int8": True, "dtype": "bfloat16"}, "int8"),
        "bf16_cache": ({"bf16_cache": True, "step": "eager"}, "bf16_cache is for"),
        "bf16_cache_dtype": ({"bf16_cache": True, "dtype": "bfloat16"}, "bf16_cache is for"),
        "int8_cache": ({"int8_cache": True, "step": "eager"}, "int8_cache is for"),
        "both_caches": ({"int8_cache": True, "bf16_cache": True}, "one of bf16_cache and int8_cache"),
    }
    if not torch.cuda.is_available():
        bad["cuda"] = ({"device": "cuda"}, "CUDA is not available")
    for name, (settings, message) in bad.items():
        with pytest.raises(VoiceLoadError, match=message):
            GptSovitsVoice.load(write_voice(tmp_path / name, "tiny", settings=settings))

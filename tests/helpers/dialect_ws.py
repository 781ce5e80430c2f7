"""Speaking the compatible dialects as their clients do: the WebSocket wire shapes Pipecat and
Cartesia's clients send over plain ``ws://`` (for servers with no TLS in front, such as Ray
Serve's proxy), and OpenAI's speech through the real ``openai`` package."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from typing import Any

import websockets


async def read_multi(ws: Any, contexts: set[str], timeout: float = 60) -> dict[str, list[dict[str, Any]]]:
    """ElevenLabs multi-stream messages by context, until each context's ``isFinal``."""
    seen: dict[str, list[dict[str, Any]]] = {c: [] for c in contexts}
    finals: set[str] = set()
    while finals != contexts:
        message = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        cid = message["contextId"]
        assert message["context_id"] == cid
        seen[cid].append(message)
        if message.get("isFinal") is True:
            finals.add(cid)
    return seen


async def elevenlabs_multi_pcm(
    base_ws: str, voice: str, text: str, rate: int = 22050, ssl_context: ssl.SSLContext | None = None
) -> bytes:
    """One context on ElevenLabs' ``multi-stream-input``, word by word as Pipecat sends an LLM's
    words; the PCM of every audio message."""
    url = f"{base_ws}/v1/text-to-speech/{voice}/multi-stream-input?output_format=pcm_{rate}"
    async with websockets.connect(url, max_size=None, ssl=ssl_context) as ws:
        await ws.send(json.dumps({"text": " ", "context_id": "turn-1"}))
        for word in text.split():
            await ws.send(json.dumps({"text": f"{word} ", "context_id": "turn-1"}))
        await ws.send(json.dumps({"context_id": "turn-1", "flush": True}))
        await ws.send(json.dumps({"context_id": "turn-1", "close_context": True}))
        seen = await read_multi(ws, {"turn-1"})
    return b"".join(base64.b64decode(m["audio"]) for m in seen["turn-1"] if m.get("audio"))


async def cartesia_pcm(base_ws: str, voice: str, text: str, rate: int = 24000, encoding: str = "pcm_s16le") -> bytes:
    """One Cartesia context (``encoding`` at ``rate``) in one message; the bytes of its chunks."""
    context_id = uuid.uuid4().hex
    request = {"model_id": "sonic-3", "transcript": text, "voice": {"mode": "id", "id": voice},
               "context_id": context_id, "continue": False,
               "output_format": {"container": "raw", "encoding": encoding, "sample_rate": rate}}  # fmt: skip
    chunks: list[bytes] = []
    async with websockets.connect(f"{base_ws}/tts/websocket?cartesia_version=2025-04-16", max_size=None) as ws:
        await ws.send(json.dumps(request))
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
            assert message["type"] != "error", message
            if message["type"] == "chunk":
                chunks.append(base64.b64decode(message["data"]))
            if message["type"] == "done":
                return b"".join(chunks)


async def openai_pcm(base: str, text: str, **extra: Any) -> bytes:
    """OpenAI's ``POST /v1/audio/speech`` (voice ``alloy``, ``pcm``) through the ``openai`` package."""
    import openai

    async with (
        openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="not-checked", max_retries=0) as client,
        client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=text, response_format="pcm", **extra
        ) as response,
    ):
        return b"".join([chunk async for chunk in response.iter_bytes()])

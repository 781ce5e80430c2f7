"""Shared fixtures: the bundled voice loaded once, a running engine, a real server on a free port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import websockets
from streamvox.codecs.opus import OpusFrameDecoder
from streamvox.engine.core import EngineConfig, EngineCore
from streamvox.engine.piper_voice import PiperVoice
from streamvox.engine.voices import VoiceRegistry
from streamvox.stream_server.app import STREAM_PATH, create_app
from streamvox.stream_server.config import ServerConfig


@pytest.fixture(scope="session")
def registry() -> VoiceRegistry:
    return VoiceRegistry.from_paths()


@pytest.fixture(scope="session")
def voice(registry: VoiceRegistry) -> PiperVoice:
    return registry.get(None)


@pytest.fixture()
def engine() -> Iterator[EngineCore]:
    core = EngineCore()
    core.start()
    yield core
    core.stop()


@pytest.fixture()
async def server(aiohttp_server: Any, registry: VoiceRegistry) -> AsyncIterator[str]:
    """A real streamvox server on a free loopback port; yields its WebSocket URL."""
    config = ServerConfig(
        max_message_bytes=8 * 1024,
        max_text_chars=4000,
        max_context_chars=6000,
        engine=EngineConfig(max_lead_s=None),  # clients here read as fast as they can
    )
    app = create_app(config, registry)
    srv = await aiohttp_server(app, host="127.0.0.1")
    yield f"ws://127.0.0.1:{srv.port}{STREAM_PATH}"


@dataclass
class Exchange:
    """Everything one context sent back."""

    events: list[dict[str, Any]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def decode_opus(self) -> np.ndarray:
        decoder = OpusFrameDecoder()
        if not self.audio:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([decoder.decode(p) for p in self.audio])


async def recv_json(ws: websockets.ClientConnection, timeout: float = 30.0) -> dict[str, Any]:
    """The next text frame, skipping nothing (fails on binary)."""
    message = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(message, str), f"expected a JSON event, got {len(message)} binary bytes"
    return json.loads(message)


async def collect_until(
    ws: websockets.ClientConnection, kinds: tuple[str, ...] = ("done", "cancelled"), timeout: float = 60.0
) -> Exchange:
    """Read audio and events until an event of one of ``kinds`` arrives."""
    exchange = Exchange()
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, bytes):
            exchange.audio.append(message)
            continue
        event = json.loads(message)
        exchange.events.append(event)
        if event["type"] in kinds:
            return exchange


async def send(ws: websockets.ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))

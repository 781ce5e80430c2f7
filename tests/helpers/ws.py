"""Speaking to a server as a client does: send messages, read events and audio frames."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import websockets
from streamvox.codecs.opus import OpusFrameDecoder


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


@dataclass
class Multiplex:
    """What a protocol-2 socket sent back, sorted by context (binary frames by their channel byte)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    channels: dict[int, str] = field(default_factory=dict)
    audio: dict[str, list[bytes]] = field(default_factory=dict)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each context's ``done`` or ``cancelled`` event."""
    after_finish: list[str] = field(default_factory=list)
    """Contexts that sent audio after their ``done``/``cancelled``: must stay empty."""

    def take(self, message: str | bytes) -> dict[str, Any] | None:
        if isinstance(message, bytes):
            cid = self.channels[message[0]]
            if cid in self.finished:
                self.after_finish.append(cid)
            self.audio.setdefault(cid, []).append(message[1:])
            return None
        event = json.loads(message)
        self.events.append(event)
        if event["type"] == "context":
            self.channels[event["channel"]] = event["context_id"]
        elif event["type"] in ("done", "cancelled"):
            self.finished[event["context_id"]] = event
        return event

    def of(self, context_id: str) -> bytes:
        return b"".join(self.audio.get(context_id, []))


async def read_until_finished(
    ws: websockets.ClientConnection, contexts: set[str], into: Multiplex | None = None, timeout: float = 60.0
) -> Multiplex:
    """Read a protocol-2 socket until every context in ``contexts`` is done or cancelled."""
    mux = into or Multiplex()
    while not contexts <= set(mux.finished):
        mux.take(await asyncio.wait_for(ws.recv(), timeout))
    return mux


async def speak_whole(url: str, text: str, settings: dict[str, Any]) -> Exchange:
    """One context on a fresh socket: ``configure`` with ``settings``, all of ``text``, ``end``."""
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="configure", **settings)
        await recv_json(ws)
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        return await collect_until(ws)

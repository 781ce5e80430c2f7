"""aiohttp WebSocket helpers for tests that drive the native protocol with ``aiohttp``."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


async def speak_one_context(
    ws: aiohttp.ClientWebSocketResponse, text: str, voice: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """On a ready protocol-2 socket: one context ``a`` speaking ``text`` (after a ``configure``
    of ``voice``, if given); its last event (``done`` or ``error``) plus ``audio_bytes``, the
    audio that came before it."""
    if voice:
        await ws.send_json({"type": "configure", "voice": voice})
    await ws.send_json({"type": "text", "text": text, "context_id": "a"})
    await ws.send_json({"type": "end", "context_id": "a"})
    audio = 0
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.BINARY:
            audio += len(msg.data)
            continue
        event = json.loads(msg.data)
        if event["type"] in ("done", "error"):
            return {**event, "audio_bytes": audio}

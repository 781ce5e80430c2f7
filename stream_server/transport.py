"""What a dialect needs of a client socket, and its aiohttp implementation.

Dialects read :class:`Incoming` frames and write text, bytes and a close
through :class:`Transport`, so the same session code can later sit behind an
ASGI server (Ray Serve) with a second implementation of this protocol.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, Protocol

from aiohttp import WSMsgType, web
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.corking import corked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Incoming:
    """One frame from the client: text, binary, or a socket error (then the reader stops)."""

    kind: Literal["text", "binary", "error"]
    data: str | bytes | None = None


class Transport(Protocol):
    """A message socket to one client."""

    @property
    def closed(self) -> bool: ...

    @property
    def last_write(self) -> float:
        """Monotonic time the socket last accepted a frame (a reader that stopped shows as none)."""
        ...

    def __aiter__(self) -> AsyncIterator[Incoming]: ...

    async def send_text(self, text: str) -> None: ...

    async def send_bytes(self, payload: bytes) -> None: ...

    async def close(self, code: int, reason: bytes, drain: bool = True) -> None: ...

    def abort(self) -> None:
        """Drop the connection without a close frame (the peer sees 1006)."""
        ...

    def corked(self) -> AbstractContextManager[None]:
        """Frames sent while inside leave together when it ends (see :mod:`.corking`)."""
        ...


class Prepended:
    """A :class:`Transport` whose reader yields ``first`` (a frame read before the session began,
    say to find a key in it) and then the socket's own frames."""

    def __init__(self, first: Incoming, transport: Transport) -> None:
        self._first: Incoming | None = first
        self._transport = transport

    @property
    def closed(self) -> bool:
        return self._transport.closed

    @property
    def last_write(self) -> float:
        return self._transport.last_write

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for frame in self._transport:
            yield frame

    async def send_text(self, text: str) -> None:
        await self._transport.send_text(text)

    async def send_bytes(self, payload: bytes) -> None:
        await self._transport.send_bytes(payload)

    async def close(self, code: int, reason: bytes, drain: bool = True) -> None:
        await self._transport.close(code, reason, drain)

    def abort(self) -> None:
        self._transport.abort()

    def corked(self) -> AbstractContextManager[None]:
        return self._transport.corked()


async def accept_websocket(request: web.Request, config: ServerConfig) -> web.WebSocketResponse:
    """Upgrade ``request`` to a WebSocket with the server's frame limit and pings."""
    # No permessage-deflate: Opus and PCM do not compress, and deflating every packet costs CPU.
    ws = web.WebSocketResponse(max_msg_size=config.hard_message_bytes, heartbeat=config.ping_interval_s, compress=False)
    await ws.prepare(request)
    return ws


class AiohttpTransport:
    """:class:`Transport` over an aiohttp ``WebSocketResponse``."""

    def __init__(self, ws: web.WebSocketResponse, raw: asyncio.BaseTransport | None = None) -> None:
        """``raw`` is the TCP transport under ``ws``: :meth:`abort` closes it."""
        self.ws = ws
        self._raw = raw
        self._last_write = time.monotonic()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    @property
    def last_write(self) -> float:
        return self._last_write

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                yield Incoming("text", msg.data)
            elif msg.type == WSMsgType.BINARY:
                yield Incoming("binary", msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.info("socket error %s", self.ws.exception())
                yield Incoming("error")
                return

    async def send_text(self, text: str) -> None:
        await self.ws.send_str(text)
        self._last_write = time.monotonic()

    async def send_bytes(self, payload: bytes) -> None:
        await self.ws.send_bytes(payload)
        self._last_write = time.monotonic()

    async def close(self, code: int, reason: bytes, drain: bool = True) -> None:
        await self.ws.close(code=code, message=reason, drain=drain)

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.abort()

    def corked(self) -> AbstractContextManager[None]:
        return corked(self._raw)

"""streamvox as an ASGI application: the same runtime and session code behind an ASGI server.

Ray Serve (``deploy/``) speaks ASGI, so each replica serves this app; uvicorn
serves it too.  It holds one :class:`ServerRuntime` (voices, engine, metrics,
access policy), started and drained by the ASGI lifespan, and routes:

* every dialect's WebSockets (:data:`SOCKET_ROUTES`: the native protocol,
  ElevenLabs' two sockets, Cartesia's), each through the same
  :class:`~streamvox.stream_server.socket_routes.SocketRoute` the aiohttp
  server registers, over :class:`AsgiWebSocket`;
* ``GET /healthz``, ``GET /v1/voices``, ``GET /metrics``: the aiohttp server's answers.

Credentials and origins are checked by the same :class:`Access`, with each
route's own credential sources.  Other paths get 404: the HTTP speech routes
(OpenAI's, ElevenLabs') and Wyoming's TCP listener are the aiohttp server's
only.  Event-loop only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.auth import AuthRefusal, Grant
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.dialects.cartesia import routes as cartesia
from streamvox.stream_server.dialects.elevenlabs import routes as elevenlabs
from streamvox.stream_server.dialects.native import routes as native
from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION, error_event
from streamvox.stream_server.metrics import CONTENT_TYPE
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.socket_routes import SocketRequest, SocketRoute, find_socket_route
from streamvox.stream_server.transport import Incoming

log = logging.getLogger(__name__)

SOCKET_ROUTES: tuple[SocketRoute, ...] = (*native.SOCKETS, *elevenlabs.SOCKETS, *cartesia.SOCKETS)
"""Every dialect's WebSockets, as the aiohttp server registers them."""

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class RequestView:
    """What the access check reads of a request: its headers (lower-case names) and query."""

    headers: Mapping[str, str]
    query: Mapping[str, str]

    @classmethod
    def of(cls, scope: Scope) -> RequestView:
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", []))
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        return cls(headers, query)

    @property
    def host(self) -> str | None:
        return self.headers.get("host")


class AsgiWebSocket:
    """:class:`~streamvox.stream_server.transport.Transport` over an accepted ASGI WebSocket.

    Frames larger than ``max_bytes`` end the socket with 1009, as the aiohttp server's limit does.
    ASGI has no way to drop a connection without a close frame, so :meth:`abort` closes with
    1008 without waiting for the peer."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive = receive
        self._send = send
        self._max_bytes = max_bytes
        self._closed = False
        self._last_write = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_write(self) -> float:
        return self._last_write

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        while not self._closed:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._closed = True
                return
            if kind != "websocket.receive":
                continue
            data = message.get("text")
            payload: str | bytes = data if data is not None else message.get("bytes") or b""
            if len(payload) > self._max_bytes:
                await self.close(1009, b"message too big")
                return
            yield Incoming("text" if isinstance(payload, str) else "binary", payload)

    async def send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})
        self._last_write = time.monotonic()

    async def send_bytes(self, payload: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": payload})
        self._last_write = time.monotonic()

    async def close(self, code: int, reason: bytes, drain: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason.decode("utf-8", "replace")})
        except (OSError, RuntimeError) as exc:  # the peer is gone already
            log.debug("close after the peer left: %s", exc)

    def abort(self) -> None:
        if not self._closed:
            asyncio.get_running_loop().create_task(self.close(1008, b"dropped"))


class StreamvoxAsgi:
    """The ASGI callable (see the module docstring); build it with :func:`create_asgi_app`."""

    def __init__(self, runtime: ServerRuntime, replica: str | None = None) -> None:
        self.runtime = runtime
        self.replica = replica
        """This copy's name among several (a Ray Serve replica's id): sent as the
        ``x-streamvox-replica`` header of every accepted socket and in ``/healthz``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)

    async def startup(self) -> None:
        """Start the engine (the lifespan does this; hosts without one call it themselves)."""
        self.runtime.engine.start()

    async def shutdown(self) -> None:
        """Refuse new sessions, let open ones finish within the drain window, stop the engine."""
        if self.runtime.sessions:
            log.info("draining %d session(s)", len(self.runtime.sessions))
        await self.runtime.drain()
        await asyncio.to_thread(self.runtime.engine.stop)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _check(self, request: RequestView) -> Grant | AuthRefusal:
        return self.runtime.access.check(native.CREDENTIALS.find(request), "native")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        request = RequestView.of(scope)
        found = find_socket_route(SOCKET_ROUTES, scope.get("path", ""))
        if found is None:
            await send({"type": "websocket.close", "code": 4404, "reason": "no socket at this path"})
            return
        route, params = found
        if not self.runtime.access.origin_allowed(request.headers.get("origin"), request.host):
            log.warning("refused a WebSocket from origin %r", request.headers.get("origin"))
            await send({"type": "websocket.close", "code": 4403, "reason": "origin_not_allowed"})
            return
        outcome = self.runtime.access.check(route.credentials.find(request), route.dialect)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if self.replica is not None:
            accept["headers"] = [(b"x-streamvox-replica", self.replica.encode())]
        await send(accept)
        transport = AsgiWebSocket(receive, send, self.runtime.config.hard_message_bytes)
        await route.serve(transport, self.runtime, SocketRequest(params, request.query, outcome))
        await transport.close(1000, b"")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope.get("path"), scope.get("method")
        runtime = self.runtime
        if method != "GET" or path not in ("/healthz", native.VOICES_PATH, "/metrics"):
            await _respond(send, 404, {"error": "not_found", "message": f"no route for {method} {path}"})
            return
        if path == "/healthz":
            ok, body = runtime.health(PROTOCOL_VERSION)
            if self.replica is not None:
                body["replica"] = self.replica
            await _respond(send, 200 if ok else 503, body)
            return
        outcome = self._check(RequestView.of(scope))
        if isinstance(outcome, AuthRefusal):
            refusal = error_event(outcome.kind, outcome.message, fatal=True)
            await _respond(send, native.HTTP_STATUS.get(outcome.kind, 400), refusal)
        elif path == "/metrics":
            await _respond(send, 200, runtime.metrics.render(), CONTENT_TYPE)
        else:
            await _respond(send, 200, {"voices": [v.to_json() for v in runtime.voices_for(outcome).infos()]})


async def _respond(send: Send, status: int, body: Any, content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def create_asgi_app(
    config: ServerConfig | None = None, voices: VoiceRegistry | None = None, replica: str | None = None
) -> StreamvoxAsgi:
    """Build the ASGI app; voices load here unless a registry is given (as ``create_app`` does)."""
    return StreamvoxAsgi(ServerRuntime.build(config or ServerConfig(), voices), replica)

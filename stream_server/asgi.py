"""streamvox as an ASGI application: the same runtime and session code behind an ASGI server.

Ray Serve (``deploy/``) speaks ASGI, so each replica serves this app; uvicorn
serves it too.  It holds one :class:`ServerRuntime` (voices, engine, metrics,
access policy), started and drained by the ASGI lifespan, and routes:

* every dialect's routes (:data:`ROUTES`): the native protocol's socket,
  tokens and voices; OpenAI's speech; ElevenLabs' two sockets, its HTTP
  speech and voices; Cartesia's socket.  Each is the same
  :class:`~streamvox.stream_server.routes.SocketRoute` or
  :class:`~streamvox.stream_server.routes.HttpRoute` the aiohttp server
  registers, over :class:`AsgiWebSocket` or :class:`AsgiHttpResponse`;
* ``GET /healthz`` and ``GET /metrics``: the aiohttp server's answers.

Credentials and origins are checked by the same :class:`Access`, with each
route's own credential sources and refusal shape.  Other paths get 404;
Wyoming's TCP listener and the demo page are the aiohttp server's only.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from multidict import CIMultiDict
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.auth import AuthRefusal
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.dialects.cartesia import routes as cartesia
from streamvox.stream_server.dialects.elevenlabs import routes as elevenlabs
from streamvox.stream_server.dialects.native import routes as native
from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION
from streamvox.stream_server.dialects.openai import routes as openai
from streamvox.stream_server.metrics import CONTENT_TYPE
from streamvox.stream_server.routes import (
    HttpRequest,
    HttpResponse,
    HttpRoute,
    SocketRequest,
    SocketRoute,
    find_route,
    send_json,
)
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.transport import Incoming

log = logging.getLogger(__name__)

ROUTES = (*native.ROUTES, *openai.ROUTES, *elevenlabs.ROUTES, *cartesia.ROUTES)
"""Every dialect's routes, as the aiohttp server registers them (Wyoming is TCP, not here)."""
SOCKET_ROUTES = tuple(r for r in ROUTES if isinstance(r, SocketRoute))
HTTP_ROUTES = tuple(r for r in ROUTES if isinstance(r, HttpRoute))

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
    1008 without waiting for the peer, nor to reach its socket: :meth:`corked` does nothing."""

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

    def corked(self) -> AbstractContextManager[None]:
        return nullcontext()


class StreamvoxAsgi:
    """The ASGI callable (see the module docstring); build it with :func:`create_asgi_app`."""

    def __init__(self, runtime: ServerRuntime, replica: str | None = None) -> None:
        self.runtime = runtime
        self.replica = replica
        """This copy's name among several (a Ray Serve replica's id): sent as the
        ``x-streamvox-replica`` header of every accepted socket and in ``/healthz``."""
        self.metrics_source: Callable[[], Awaitable[bytes]] | None = None
        """What ``GET /metrics`` answers when not this process's own metrics (a Ray deployment
        answers with every replica's)."""
        self.companions: list[Callable[[], Awaitable[None]]] = []
        """Coroutines run beside the app from startup until shutdown (a Ray replica's reporters)."""
        self._companion_tasks: list[asyncio.Task[None]] = []
        metrics = HttpRoute("GET", "/metrics", "native", native.CREDENTIALS, self._metrics, native.http_refusal)
        self._http_routes = (*HTTP_ROUTES, metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)

    async def startup(self) -> None:
        """Start the engine and the companions (the lifespan does this; hosts without one call it)."""
        self.runtime.metrics.thread_cpu.mark_event_loop()
        self.runtime.engine.start()
        self._companion_tasks = [asyncio.create_task(_logged(run())) for run in self.companions]

    async def shutdown(self) -> None:
        """Refuse new sessions, let open ones finish within the drain window, stop the companions
        and the engine."""
        if self.runtime.sessions:
            log.info("draining %d session(s)", len(self.runtime.sessions))
        await self.runtime.drain()
        for task in self._companion_tasks:
            task.cancel()
        await asyncio.gather(*self._companion_tasks, return_exceptions=True)
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

    async def _metrics(self, runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
        """``GET /metrics`` (the native protocol's keys): this process's metrics, or ``metrics_source``'s."""
        text = await self.metrics_source() if self.metrics_source is not None else runtime.metrics.render()
        await response.start(200, CONTENT_TYPE, len(text))
        await response.write(text)
        await response.finish()

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        request = RequestView.of(scope)
        found = find_route(SOCKET_ROUTES, scope.get("path", ""))
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
        path, method = scope.get("path", ""), scope.get("method", "")
        runtime = self.runtime
        response = AsgiHttpResponse(receive, send)
        if method == "GET" and path == "/healthz":
            ok, body = runtime.health(PROTOCOL_VERSION)
            if self.replica is not None:
                body["replica"] = self.replica
            await send_json(response, 200 if ok else 503, body)
            return
        view = RequestView.of(scope)
        found = find_route(self._http_routes, path, method)
        if found is None:
            await send_json(response, 404, {"error": "not_found", "message": f"no route for {method} {path}"})
            return
        route, params = found
        body = await response.read_body(runtime.config.hard_message_bytes)
        if body is None:
            await send_json(response, 413, {"error": "payload_too_large", "message": "the request body is too large"})
            return
        outcome = runtime.access.check(route.credentials.find(view), route.dialect)
        if isinstance(outcome, AuthRefusal):
            await send_json(response, *route.refusal(outcome))
            return

        async def read() -> bytes:
            return body

        try:
            await route.serve(runtime, HttpRequest(params, view.query, view.headers, outcome, read), response)
        except ConnectionError:
            log.debug("%s %s: the client left", method, path)
        finally:
            response.close()


class AsgiHttpResponse:
    """:class:`~streamvox.stream_server.routes.HttpResponse` over an ASGI HTTP request.

    Once the body is read, a task waits for the client's ``http.disconnect`` so that a write
    after it raises ``ConnectionError``, as an aiohttp write to a gone client does.  ASGI has
    no way to cut a connection: :meth:`drop` makes every later write fail instead; nor to reach
    its socket: :meth:`corked` does nothing."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._gone = False
        self._watch: asyncio.Task[None] | None = None

    async def read_body(self, limit: int) -> bytes | None:
        """The whole body, or ``None`` past ``limit`` bytes; then watch for the client leaving."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone = True
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._watch = asyncio.create_task(self._wait_for_disconnect())
        return b"".join(chunks)

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._gone = True

    async def start(self, status: int, content_type: str, length: int | None = None) -> None:
        headers = [(b"content-type", content_type.encode())]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def write(self, data: bytes) -> None:
        await self._body(data, more=True)

    async def finish(self) -> None:
        await self._body(b"", more=False)

    async def _body(self, data: bytes, more: bool) -> None:
        if self._gone:
            raise ConnectionError("the client has gone")
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
        except OSError as exc:
            self._gone = True
            raise ConnectionError(str(exc)) from exc

    def drop(self) -> None:
        self._gone = True

    def corked(self) -> AbstractContextManager[None]:
        return nullcontext()

    def close(self) -> None:
        """The request is over: stop watching for a disconnect."""
        if self._watch is not None:
            self._watch.cancel()


async def _logged(work: Awaitable[None]) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a companion of the ASGI app failed")


def create_asgi_app(
    config: ServerConfig | None = None, voices: VoiceRegistry | None = None, replica: str | None = None
) -> StreamvoxAsgi:
    """Build the ASGI app; voices load here unless a registry is given (as ``create_app`` does)."""
    return StreamvoxAsgi(ServerRuntime.build(config or ServerConfig(), voices), replica)

"""A dialect's routes, declared once and served by any web framework.

A dialect names its WebSockets as :class:`SocketRoute` values and its HTTP
routes as :class:`HttpRoute` values: a path pattern (``{name}`` matches one
path segment), the dialect whose keys it takes, where its clients put them,
and the coroutine that serves it: a socket over a
:class:`~streamvox.stream_server.transport.Transport`, an HTTP request into an
:class:`HttpResponse`.  The aiohttp server registers them with
:func:`add_routes` (its access middleware checks the credentials); the ASGI
app (``asgi.py``, what Ray Serve runs) matches them with :func:`find_route`
and checks the credentials itself.  The dialect code under each route is the
same, whichever server accepted the request.  Event-loop only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol, TypeVar

from aiohttp import web
from streamvox.stream_server.auth import AuthRefusal, CredentialSources, Grant, Handler, grant_of, protect
from streamvox.stream_server.corking import corked
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.transport import AiohttpTransport, Transport, accept_websocket


@dataclass(frozen=True)
class PathPattern:
    """``/v1/text-to-speech/{voice_id}/stream``: literal parts, and named parts of one segment."""

    path: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.path)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        object.__setattr__(self, "_regex", re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        """The path's named parts if ``path`` is this pattern's, else ``None``."""
        found = self._regex.match(path)
        return None if found is None else found.groupdict()


@cache
def path_pattern(path: str) -> PathPattern:
    """The compiled pattern of a route's path (compiled once per path)."""
    return PathPattern(path)


@dataclass(frozen=True)
class SocketRequest:
    """What a socket dialect reads of the upgrade request: the path's named parts, the query,
    and what the caller's credential gave (checked before the socket was accepted)."""

    path_params: Mapping[str, str]
    query: Mapping[str, str]
    outcome: Grant | AuthRefusal


SocketServe = Callable[[Transport, ServerRuntime, SocketRequest], Awaitable[None]]
"""Serves one accepted socket until it ends (the caller closes it afterwards if still open)."""


@dataclass(frozen=True)
class SocketRoute:
    """One WebSocket path of a dialect (see the module docstring)."""

    path: str
    dialect: str
    credentials: CredentialSources
    serve: SocketServe


@dataclass(frozen=True)
class HttpRequest:
    """What an HTTP dialect reads of a request: the path's named parts, the query, the headers
    (case-insensitive), what the caller's credential gave, and the body (read on demand,
    bounded by the server's message limit)."""

    path_params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    outcome: Grant | AuthRefusal
    read: Callable[[], Awaitable[bytes]]


class HttpResponse(Protocol):
    """A response being written, whatever the framework: start it, write to it, finish it.
    :meth:`write` raises ``ConnectionError`` once the client has gone."""

    async def start(self, status: int, content_type: str, length: int | None = None) -> None:
        """Send the status and headers: ``length`` bytes will follow, or (``None``) a stream of them."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...

    def drop(self) -> None:
        """Cut the connection (a client that stopped reading)."""
        ...

    def corked(self) -> AbstractContextManager[None]:
        """Writes made while inside leave together when it ends (see :mod:`.corking`)."""
        ...


async def send_json(response: HttpResponse, status: int, body: Any) -> None:
    """A whole JSON response."""
    data = json.dumps(body).encode()
    await response.start(status, "application/json", len(data))
    await response.write(data)
    await response.finish()


HttpServe = Callable[[ServerRuntime, HttpRequest, HttpResponse], Awaitable[None]]
"""Answers one request into the response (started and finished by it)."""

HttpRefusal = Callable[[AuthRefusal], tuple[int, Any]]
"""A credential refusal in the dialect's HTTP error shape: status and JSON body."""


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP method and path of a dialect (see the module docstring)."""

    method: str
    path: str
    dialect: str
    credentials: CredentialSources
    serve: HttpServe
    refusal: HttpRefusal


Route = TypeVar("Route", SocketRoute, HttpRoute)


def find_route(routes: Sequence[Route], path: str, method: str | None = None) -> tuple[Route, dict[str, str]] | None:
    """The first route (of ``method``, for HTTP routes) that ``path`` matches, with its named parts."""
    for route in routes:
        if method is not None and getattr(route, "method", method) != method:
            continue
        params = path_pattern(route.path).match(path)
        if params is not None:
            return route, params
    return None


def add_routes(app: web.Application, runtime: ServerRuntime, routes: Sequence[SocketRoute | HttpRoute]) -> None:
    """Register ``routes`` on the aiohttp ``app`` (the access middleware checks their credentials)."""
    for route in routes:
        if isinstance(route, SocketRoute):
            handler = protect(_socket_handler(route, runtime), route.dialect, route.credentials, None)
            app.router.add_get(route.path, handler)
        else:
            refusal = aiohttp_refusal(route.refusal)
            handler = protect(_http_handler(route, runtime), route.dialect, route.credentials, refusal)
            app.router.add_route(route.method, route.path, handler)


def _socket_handler(route: SocketRoute, runtime: ServerRuntime) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await accept_websocket(request, runtime.config)
        socket_request = SocketRequest(dict(request.match_info), request.query, grant_of(request))
        await route.serve(AiohttpTransport(ws, request.transport), runtime, socket_request)
        return ws

    return handler


def _http_handler(route: HttpRoute, runtime: ServerRuntime) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = AiohttpResponse(request)
        http_request = HttpRequest(dict(request.match_info), request.query, request.headers, grant_of(request),
                                   request.read)  # fmt: skip
        await route.serve(runtime, http_request, response)
        return response.response

    return handler


def aiohttp_refusal(refusal: HttpRefusal) -> Callable[[AuthRefusal], web.Response]:
    """``refusal`` as the aiohttp access middleware renders it."""

    def render(outcome: AuthRefusal) -> web.Response:
        status, body = refusal(outcome)
        return web.json_response(body, status=status)

    return render


class AiohttpResponse:
    """:class:`HttpResponse` over an aiohttp ``StreamResponse``."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response = web.StreamResponse()

    async def start(self, status: int, content_type: str, length: int | None = None) -> None:
        self.response.set_status(status)
        self.response.content_type = content_type
        if length is None:
            self.response.enable_chunked_encoding()
        else:
            self.response.content_length = length
        await self.response.prepare(self.request)

    async def write(self, data: bytes) -> None:
        try:
            await self.response.write(data)
        except (ConnectionError, RuntimeError) as exc:  # aiohttp raises either once the peer is gone
            raise ConnectionError(str(exc)) from exc

    async def finish(self) -> None:
        try:
            await self.response.write_eof()
        except (ConnectionError, RuntimeError) as exc:
            raise ConnectionError(str(exc)) from exc

    def drop(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()

    def corked(self) -> AbstractContextManager[None]:
        return corked(self.request.transport)

"""A dialect's WebSocket route, declared once and served by any web framework.

A socket dialect names its sockets as :class:`SocketRoute` values: a path
pattern (``{name}`` matches one path segment), the dialect whose keys it
takes, where its clients put them, and the coroutine that serves an accepted
socket over a :class:`~streamvox.stream_server.transport.Transport`.  The
aiohttp server registers them with :func:`add_socket_routes`; the ASGI app
(``asgi.py``, which Ray Serve runs) matches them with :meth:`SocketRoute.match`.
So the session code under every socket is the same, whichever server accepted it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from streamvox.stream_server.auth import AuthRefusal, CredentialSources, Grant, Handler, grant_of, protect
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.transport import AiohttpTransport, Transport, accept_websocket


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
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = re.split(r"\{(\w+)\}", self.path)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
        object.__setattr__(self, "_pattern", re.compile(f"^{regex}$"))

    def match(self, path: str) -> dict[str, str] | None:
        """The path's named parts if ``path`` is this route's, else ``None``."""
        found = self._pattern.match(path)
        return None if found is None else found.groupdict()


def find_socket_route(routes: Sequence[SocketRoute], path: str) -> tuple[SocketRoute, dict[str, str]] | None:
    """The first route that ``path`` matches, with its named parts."""
    for route in routes:
        params = route.match(path)
        if params is not None:
            return route, params
    return None


def add_socket_routes(app: web.Application, runtime: ServerRuntime, routes: Sequence[SocketRoute]) -> None:
    """Register ``routes`` on the aiohttp ``app`` (the access middleware checks their credentials)."""
    for route in routes:
        handler = protect(_aiohttp_handler(route, runtime), route.dialect, route.credentials, None)
        app.router.add_get(route.path, handler)


def _aiohttp_handler(route: SocketRoute, runtime: ServerRuntime) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        ws = await accept_websocket(request, runtime.config)
        socket_request = SocketRequest(dict(request.match_info), request.query, grant_of(request))
        await route.serve(AiohttpTransport(ws, request.transport), runtime, socket_request)
        return ws

    return handler

"""Who may use the server: API keys, browser tokens, the WebSocket Origin allowlist.

One policy object (:class:`Access`) answers every question; one aiohttp
middleware (:func:`access_middleware`) asks it for every protected route and
leaves the answer on the request (:data:`GRANT`), and the WebSocket and TCP
handlers that take credentials later (ElevenLabs' first message, Wyoming) call
:meth:`Access.check` / :meth:`Access.check_peer` themselves.  A route is
protected when its dialect registered it with :func:`protect`, naming where
its clients put their key (:class:`CredentialSources`).

HTTP routes that fail are answered by the middleware in the dialect's own
error shape.  WebSocket routes (registered with no HTTP renderer) always reach
their handler, which refuses on the socket in the dialect's shape (a browser
cannot read a refused handshake): whether a route is a socket is the route's
business, never the client's ``Upgrade`` header.  A disallowed Origin is refused before any
upgrade (403), the defence against cross-site WebSocket hijacking.

With no keys configured the server is anonymous: every check passes.
Keys and tokens never reach a log.  Event-loop only, except :class:`KeyRing`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from streamvox.stream_server.keys import KeyRecord, KeyRing
from streamvox.stream_server.quotas import QuotaStore, Usage
from streamvox.stream_server.tokens import TOKEN_PREFIX, TokenClaims, TokenError, TokenSigner

log = logging.getLogger(__name__)

DIALECTS = ("native", "openai", "elevenlabs", "cartesia", "wyoming")
_ROUTE_ATTR = "__streamvox_route_access__"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
SECRET_QUERY_NAMES = frozenset({"token", "api_key", "access_token", "authorization", "xi_api_key", "xi-api-key",
                                "single_use_token"})  # fmt: skip


@dataclass(frozen=True)
class Grant:
    """What a request may do: a key (``None``: the server is anonymous) and maybe a token."""

    key: KeyRecord | None = None
    token: TokenClaims | None = None

    @property
    def who(self) -> str:
        """A name for logs: the key's name, never the key."""
        if self.key is None:
            return "anonymous"
        return f"{self.key.name} (token)" if self.token is not None else self.key.name

    def allows_voice(self, voice_id: str) -> bool:
        for allowed in (self.key.voices if self.key else None, self.token.voices if self.token else None):
            if allowed is not None and voice_id not in allowed:
                return False
        return True

    def usage(self, store: QuotaStore) -> Usage | None:
        """The session's meter against the key's limits (``None`` when anonymous)."""
        if self.key is None:
            return None
        token = self.token
        return Usage(store, self.key.name, self.key.limits, token.token_id if token else None,
                     token.sessions if token else None)  # fmt: skip


ANONYMOUS = Grant()


@dataclass(frozen=True)
class AuthRefusal:
    """Why a request is refused: ``unauthorized`` (no or bad credential) or ``forbidden``."""

    kind: Literal["unauthorized", "forbidden"]
    message: str
    missing: bool = False
    """No credential was presented at all (a dialect may still take one from its first message)."""

    @property
    def status(self) -> int:
        return 401 if self.kind == "unauthorized" else 403


class CredentialCarrier(Protocol):
    """What a credential is looked up in: an aiohttp request, or the ASGI app's view of one."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class CredentialSources:
    """Where a dialect's clients put their key: ``Authorization: Bearer``, whole-value headers,
    query parameters (the first one present wins, in that order)."""

    headers: tuple[str, ...] = ()
    bearer: bool = True
    query: tuple[str, ...] = ()

    def find(self, request: CredentialCarrier) -> str | None:
        if self.bearer:
            scheme, _, value = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                return value.strip()
        for name in self.headers:
            if value := request.headers.get(name, "").strip():
                return value
        for name in self.query:
            if value := request.query.get(name, "").strip():
                return value.removeprefix("Bearer ").strip()
        return None


HttpRefusal = Callable[[AuthRefusal], web.StreamResponse]
"""Renders a refusal in a dialect's HTTP error shape."""


@dataclass(frozen=True)
class RouteAccess:
    dialect: str
    sources: CredentialSources
    http_refusal: HttpRefusal | None
    """``None``: a WebSocket route, whose handler refuses (see :meth:`ServerRuntime.admit`)."""


class Access:
    """The server's access policy: keys, token signing, quotas, origins, anonymity."""

    def __init__(
        self,
        keys: KeyRing,
        quotas: QuotaStore,
        allow_origins: Sequence[str] = (),
        token_secret: str | None = None,
    ) -> None:
        """``token_secret`` (else the keys file's) signs browser tokens; without either, a
        per-process secret is made (tokens then work on this process only)."""
        self.keys = keys
        self.quotas = quotas
        self.allow_origins = frozenset(o.rstrip("/").lower() for o in allow_origins)
        self.signer = TokenSigner(token_secret or keys.token_secret or secrets.token_urlsafe(32))

    @property
    def enabled(self) -> bool:
        return self.keys.enabled

    def check(self, credential: str | None, dialect: str, now: float | None = None) -> Grant | AuthRefusal:
        """The grant ``credential`` (a key or a browser token) gives for ``dialect``."""
        if not self.enabled:
            return ANONYMOUS
        if not credential:
            return AuthRefusal("unauthorized", "an API key or token is required", missing=True)
        try:
            self.keys.refresh()
        except ValueError as exc:
            log.error("keys file not reloaded (the previous keys stay in force): %s", exc)
        if not credential.startswith(TOKEN_PREFIX):
            key = self.keys.verify(credential)
            return Grant(key) if key is not None else AuthRefusal("unauthorized", "invalid or revoked API key")
        try:
            claims = self.signer.verify(credential, time.time() if now is None else now)
        except TokenError as exc:
            return AuthRefusal("unauthorized", str(exc))
        key = self.keys.named(claims.key_name)
        if key is None:
            return AuthRefusal("unauthorized", "the token's key was revoked")
        if claims.dialects is not None and dialect not in claims.dialects:
            return AuthRefusal("forbidden", f"this token is not valid for the {dialect} dialect")
        return Grant(key, claims)

    def check_peer(self, host: str | None) -> Grant | AuthRefusal:
        """A connection that cannot carry credentials (Wyoming): allowed when the server is
        anonymous or the peer is on loopback (its bind address is checked at start-up)."""
        if not self.enabled or _is_loopback(host):
            return ANONYMOUS
        return AuthRefusal("forbidden", "this protocol carries no key; only loopback clients may use it")

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser page from ``origin`` may open a socket to us at ``host`` (the Host
        header): listed origins, ``*``, the same origin, and loopback pages while anonymous."""
        if origin is None:
            return True  # not a browser
        origin = origin.rstrip("/").lower()
        if "*" in self.allow_origins or origin in self.allow_origins:
            return True
        parts = urlsplit(origin)
        if host is not None and parts.netloc == host.lower():
            return True
        return not self.enabled and _is_loopback(parts.hostname)

    def issue(
        self,
        grant: Grant,
        ttl_s: float,
        voices: Sequence[str] | None,
        dialects: Sequence[str] | None,
        sessions: int | None,
    ) -> tuple[str, TokenClaims]:
        """A browser token for ``grant``'s key, no wider than the key itself."""
        if grant.key is None or grant.token is not None:
            raise PermissionError("tokens are made with an API key")
        if voices is not None and grant.key.voices is not None and not set(voices) <= set(grant.key.voices):
            raise PermissionError("a token cannot name voices its key may not use")
        if voices is None:
            voices = grant.key.voices
        return self.signer.issue(grant.key.name, time.time(), ttl_s, voices, dialects, sessions)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_address(host: str) -> bool:
    """Whether binding to ``host`` keeps the server on this machine (``0.0.0.0`` and ``::`` do not)."""
    return _is_loopback(host)


ACCESS = web.AppKey("access", Access)
GRANT = web.RequestKey("grant", object)
"""The middleware's answer for this request: a :class:`Grant` or an :class:`AuthRefusal`."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def protect(handler: Handler, dialect: str, sources: CredentialSources, http_refusal: HttpRefusal | None) -> Handler:
    """Mark ``handler`` as a protected route of ``dialect`` (the middleware checks it).
    ``http_refusal`` renders an HTTP route's refusal; ``None`` marks a WebSocket route."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}")
    setattr(handler, _ROUTE_ATTR, RouteAccess(dialect, sources, http_refusal))
    return handler


def grant_of(request: web.Request) -> Grant | AuthRefusal:
    """What the middleware decided for ``request`` (anonymous for unprotected routes)."""
    return request.get(GRANT, ANONYMOUS)  # type: ignore[return-value]


def _is_upgrade(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route: RouteAccess | None = getattr(request.match_info.handler, _ROUTE_ATTR, None)
    if route is None:
        return await handler(request)
    access = request.app[ACCESS]
    if _is_upgrade(request) and not access.origin_allowed(request.headers.get("Origin"), request.host):
        log.warning("refused a WebSocket from origin %r", request.headers.get("Origin"))
        return web.json_response({"error": "origin_not_allowed", "message": "this page's origin may not connect"},
                                 status=403)  # fmt: skip
    outcome = access.check(route.sources.find(request), route.dialect)
    request[GRANT] = outcome
    if isinstance(outcome, AuthRefusal):
        if not outcome.missing:
            log.info("%s %s refused: %s", request.method, request.path, outcome.message)
        if route.http_refusal is not None:
            return route.http_refusal(outcome)
    return await handler(request)


def redact_query(query_string: str) -> str:
    """The query string with every credential-carrying parameter's value replaced."""
    if not query_string:
        return ""
    pairs = parse_qsl(query_string, keep_blank_values=True)
    return urlencode([(k, "REDACTED" if k.lower() in SECRET_QUERY_NAMES else v) for k, v in pairs])


class RedactingAccessLogger(AbstractAccessLogger):
    """aiohttp's access log without the credentials a query string may carry."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        query = redact_query(request.query_string)
        target = request.path + (f"?{query}" if query else "")
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %d %.3fs', request.remote, request.method, target,
            request.version.major, request.version.minor, response.status, response.body_length, time,
        )  # fmt: skip

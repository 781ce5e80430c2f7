"""The native protocol's routes: ``GET /v1/stream`` (the WebSocket; ``?protocol=2`` for protocol 2),
``POST /v1/tokens`` (browser tokens) and ``GET /v1/voices``.

Credentials: ``Authorization: Bearer <key or token>`` or ``?token=<key or token>``
(a browser cannot set headers on a WebSocket).  A refused socket gets an
``error`` event, then a close: 4401 unauthorized, 4403 forbidden, 4429
rate_limited, 1013 overloaded, 1001 draining (docs/protocol.md).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from streamvox.stream_server.auth import DIALECTS, AuthRefusal, CredentialSources, Grant
from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION, PROTOCOL_VERSIONS, error_event
from streamvox.stream_server.dialects.native.session import Session
from streamvox.stream_server.routes import HttpRequest, HttpResponse, HttpRoute, SocketRequest, SocketRoute, send_json
from streamvox.stream_server.routes import add_routes as add_dialect_routes
from streamvox.stream_server.runtime import Refusal, ServerRuntime
from streamvox.stream_server.tokens import DEFAULT_TTL_S, MAX_TTL_S
from streamvox.stream_server.transport import Transport

STREAM_PATH = "/v1/stream"
TOKENS_PATH = "/v1/tokens"
VOICES_PATH = "/v1/voices"
CREDENTIALS = CredentialSources(bearer=True, query=("token",))
CLOSE_CODES = {"unauthorized": 4401, "forbidden": 4403, "rate_limited": 4429, "overloaded": 1013, "draining": 1001}
HTTP_STATUS = {"unauthorized": 401, "forbidden": 403, "rate_limited": 429, "overloaded": 503, "draining": 503,
               "invalid_value": 400}  # fmt: skip


def http_error(code: str, message: str) -> tuple[int, dict[str, Any]]:
    """The native HTTP error: the socket's ``error`` event as a JSON body, and its status."""
    return HTTP_STATUS.get(code, 400), error_event(code, message, fatal=True)


def http_refusal(refusal: AuthRefusal) -> tuple[int, dict[str, Any]]:
    return http_error(refusal.kind, refusal.message)


async def serve_socket(transport: Transport, runtime: ServerRuntime, request: SocketRequest) -> None:
    """One accepted native socket, whatever the web framework under ``transport``: the protocol
    version the client asked for (``?protocol=``), admission (``request.outcome`` is what its
    credential gave), the session; a refusal is an ``error`` event and its close code."""
    asked = request.query.get("protocol", str(PROTOCOL_VERSION))
    if asked not in {str(v) for v in PROTOCOL_VERSIONS}:
        versions = ", ".join(str(v) for v in PROTOCOL_VERSIONS)
        message = f"protocol {asked!r} is not spoken here; use one of {versions}"
        runtime.metrics.errors.labels("invalid_value").inc()
        await transport.send_text(json.dumps(error_event("invalid_value", message, fatal=True)))
        await transport.close(1008, b"invalid_value")
        return
    admission = runtime.admit(request.outcome)
    if isinstance(admission, Refusal):
        if admission.kind != "draining":
            await transport.send_text(json.dumps(error_event(admission.kind, admission.message, fatal=True)))
        await transport.close(CLOSE_CODES[admission.kind], admission.kind.encode())
        return
    with admission:
        session = Session(transport, runtime.engine_client, admission.voices, runtime.config, runtime.metrics,
                          int(asked), admission.usage)  # fmt: skip
        await runtime.serve(session, session.run)


async def tokens(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``POST /v1/tokens`` with an API key: a browser token (``ttl_s`` default 300, at most
    3600; optional ``voices``, ``dialects``, ``max_sessions``)."""
    grant = request.outcome
    assert isinstance(grant, Grant)  # refusals were answered before the route ran
    if not runtime.access.enabled:
        await send_json(response, *http_error("invalid_value", "this server has no keys: clients need no token"))
        return
    try:
        body = _token_request(await request.read())
        token, claims = runtime.access.issue(grant, body["ttl_s"], body["voices"], body["dialects"],
                                             body["max_sessions"])  # fmt: skip
    except ValueError as exc:
        await send_json(response, *http_error("invalid_value", str(exc)))
        return
    except PermissionError as exc:
        await send_json(response, *http_error("forbidden", str(exc)))
        return
    await send_json(response, 200, {"token": token, "expires_at": claims.expires_at, "voices": claims.voices,
                                    "dialects": claims.dialects, "max_sessions": claims.sessions})  # fmt: skip


async def voices(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``GET /v1/voices``: id, language, sample rate and kind of every voice this caller may use."""
    grant = request.outcome
    assert isinstance(grant, Grant)  # refusals were answered before the route ran
    await send_json(response, 200, {"voices": [v.to_json() for v in runtime.voices_for(grant).infos()]})


ROUTES: tuple[SocketRoute | HttpRoute, ...] = (
    SocketRoute(STREAM_PATH, "native", CREDENTIALS, serve_socket),
    HttpRoute("POST", TOKENS_PATH, "native", CREDENTIALS, tokens, http_refusal),
    HttpRoute("GET", VOICES_PATH, "native", CREDENTIALS, voices, http_refusal),
)


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    add_dialect_routes(app, runtime, ROUTES)


def _token_request(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ValueError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"ttl_s", "voices", "dialects", "max_sessions"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    ttl = body.get("ttl_s", DEFAULT_TTL_S)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl <= MAX_TTL_S:
        raise ValueError(f"ttl_s must be a number of seconds in (0, {MAX_TTL_S}]")
    voices, dialects = body.get("voices"), body.get("dialects")
    for name, value in (("voices", voices), ("dialects", dialects)):
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ValueError(f"{name} must be a list of strings")
    if dialects is not None and (bad := set(dialects) - set(DIALECTS)):
        raise ValueError(f"unknown dialects {sorted(bad)}; known: {', '.join(DIALECTS)}")
    sessions = body.get("max_sessions")
    if sessions is not None and (isinstance(sessions, bool) or not isinstance(sessions, int) or sessions < 1):
        raise ValueError("max_sessions must be a positive integer")
    return {"ttl_s": float(ttl), "voices": voices, "dialects": dialects, "max_sessions": sessions}

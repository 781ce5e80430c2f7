"""The Cartesia dialect's route: ``GET /tts/websocket`` (see ``session.py`` and docs/dialects.md).

Keys come the ways Cartesia's clients send them: ``X-API-Key``,
``Authorization: Bearer``, or ``api_key`` / ``access_token`` in the query.
The version (``Cartesia-Version`` header or ``cartesia_version`` query) is
accepted and not checked.  A refused socket gets Cartesia's ``error`` message
(``status_code`` 401, 403, 429 or 503), then a close: 1008 for a credential
or a limit, 1013 overloaded, 1001 draining.
"""

from __future__ import annotations

import json

from aiohttp import web
from streamvox.stream_server.auth import CredentialSources
from streamvox.stream_server.dialects.cartesia.session import CartesiaError, CartesiaSession
from streamvox.stream_server.routes import SocketRequest, SocketRoute
from streamvox.stream_server.routes import add_routes as add_dialect_routes
from streamvox.stream_server.runtime import Refusal, ServerRuntime
from streamvox.stream_server.transport import Transport

WEBSOCKET_PATH = "/tts/websocket"
CREDENTIALS = CredentialSources(headers=("X-API-Key",), bearer=True, query=("api_key", "access_token"))
_STATUS = {"unauthorized": 401, "forbidden": 403, "rate_limited": 429, "overloaded": 429, "draining": 503}
_CLOSE = {"unauthorized": 1008, "forbidden": 1008, "rate_limited": 1008, "overloaded": 1013, "draining": 1001}


async def serve_socket(transport: Transport, runtime: ServerRuntime, request: SocketRequest) -> None:
    """One accepted Cartesia socket: admission, then the session (a refusal is Cartesia's
    ``error`` message and a close)."""
    admission = runtime.admit(request.outcome)
    if isinstance(admission, Refusal):
        error = CartesiaError(admission.message, None, _STATUS[admission.kind], admission.kind)
        await transport.send_text(json.dumps(error.body))
        await transport.close(_CLOSE[admission.kind], admission.kind.encode())
        return
    with admission:
        session = CartesiaSession(transport, runtime.engine_client, admission.voices, runtime.config,
                                  runtime.metrics, admission.usage)  # fmt: skip
        await runtime.serve(session, session.run)


ROUTES = (SocketRoute(WEBSOCKET_PATH, "cartesia", CREDENTIALS, serve_socket),)


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    add_dialect_routes(app, runtime, ROUTES)

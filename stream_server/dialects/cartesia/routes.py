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
from streamvox.stream_server.auth import CredentialSources, grant_of, protect
from streamvox.stream_server.dialects.cartesia.session import CartesiaError, CartesiaSession
from streamvox.stream_server.runtime import Refusal, ServerRuntime
from streamvox.stream_server.transport import AiohttpTransport, accept_websocket

WEBSOCKET_PATH = "/tts/websocket"
CREDENTIALS = CredentialSources(headers=("X-API-Key",), bearer=True, query=("api_key", "access_token"))
_STATUS = {"unauthorized": 401, "forbidden": 403, "rate_limited": 429, "overloaded": 429, "draining": 503}
_CLOSE = {"unauthorized": 1008, "forbidden": 1008, "rate_limited": 1008, "overloaded": 1013, "draining": 1001}


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    async def websocket(request: web.Request) -> web.StreamResponse:
        config = runtime.config
        ws = await accept_websocket(request, config)
        admission = runtime.admit(grant_of(request))
        if isinstance(admission, Refusal):
            error = CartesiaError(admission.message, None, _STATUS[admission.kind], admission.kind)
            await ws.send_str(json.dumps(error.body))
            await ws.close(code=_CLOSE[admission.kind], message=admission.kind.encode())
            return ws
        with admission:
            session = CartesiaSession(AiohttpTransport(ws, request.transport), runtime.engine_client,
                                      admission.voices, config, runtime.metrics, admission.usage)  # fmt: skip
            await runtime.serve(session, session.run)
        return ws

    app.router.add_get(WEBSOCKET_PATH, protect(websocket, "cartesia", CREDENTIALS, None))

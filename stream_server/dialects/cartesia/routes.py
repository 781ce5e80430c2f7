"""The Cartesia dialect's route: ``GET /tts/websocket`` (see ``session.py`` and docs/dialects.md).

Cartesia's auth (``X-API-Key``, ``Authorization: Bearer``, ``api_key`` or
``access_token`` in the query) and version (``Cartesia-Version`` header or
``cartesia_version`` query) are accepted and not checked here.
"""

from __future__ import annotations

import json

from aiohttp import web
from streamvox.stream_server.dialects.cartesia.session import CartesiaError, CartesiaSession
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.transport import AiohttpTransport

WEBSOCKET_PATH = "/tts/websocket"


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    async def websocket(request: web.Request) -> web.StreamResponse:
        config = runtime.config
        ws = web.WebSocketResponse(
            max_msg_size=config.hard_message_bytes, heartbeat=config.ping_interval_s, compress=False
        )
        await ws.prepare(request)
        refusal = runtime.refusal()
        if refusal is not None:
            if refusal == "overloaded":
                runtime.metrics.sessions_rejected.inc()
            error = CartesiaError("The server is at capacity; retry later.", None, 429, "overloaded")
            if refusal == "draining":
                error = CartesiaError("The server is shutting down.", None, 503, "server_draining")
            await ws.send_str(json.dumps(error.body))
            await ws.close(code=1013 if refusal == "overloaded" else 1001)
            return ws
        session = CartesiaSession(
            AiohttpTransport(ws, request.transport), runtime.engine_client, runtime.voices, config, runtime.metrics
        )
        await runtime.serve(session, session.run)
        return ws

    app.router.add_get(WEBSOCKET_PATH, websocket)

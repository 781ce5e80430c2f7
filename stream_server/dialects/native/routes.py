"""The native protocol's route: ``GET /v1/stream``, the WebSocket (``?protocol=2`` for protocol 2)."""

from __future__ import annotations

import json

from aiohttp import web
from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION, PROTOCOL_VERSIONS, error_event
from streamvox.stream_server.dialects.native.session import Session
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.transport import AiohttpTransport

STREAM_PATH = "/v1/stream"


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    async def stream_handler(request: web.Request) -> web.StreamResponse:
        config = runtime.config
        # No permessage-deflate: Opus and PCM do not compress, and deflating every packet costs CPU.
        ws = web.WebSocketResponse(
            max_msg_size=config.hard_message_bytes, heartbeat=config.ping_interval_s, compress=False
        )
        await ws.prepare(request)
        asked = request.query.get("protocol", str(PROTOCOL_VERSION))
        if asked not in {str(v) for v in PROTOCOL_VERSIONS}:
            versions = ", ".join(str(v) for v in PROTOCOL_VERSIONS)
            message = f"protocol {asked!r} is not spoken here; use one of {versions}"
            runtime.metrics.errors.labels("invalid_value").inc()
            await ws.send_str(json.dumps(error_event("invalid_value", message, fatal=True)))
            await ws.close(code=1008, message=b"invalid_value")
            return ws
        refusal = runtime.refusal()
        if refusal == "draining":
            await ws.close(code=1001, message=b"server shutting down")
            return ws
        if refusal == "overloaded":
            runtime.metrics.sessions_rejected.inc()
            runtime.metrics.errors.labels("overloaded").inc()
            message = f"server at capacity ({config.max_sessions} sessions); retry later"
            await ws.send_str(json.dumps(error_event("overloaded", message, fatal=True)))
            await ws.close(code=1013, message=b"overloaded")
            return ws
        transport = AiohttpTransport(ws, request.transport)
        session = Session(transport, runtime.engine_client, runtime.voices, config, runtime.metrics, int(asked))
        await runtime.serve(session, session.run)
        return ws

    app.router.add_get(STREAM_PATH, stream_handler)

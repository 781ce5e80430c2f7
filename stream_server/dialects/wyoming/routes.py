"""The Wyoming dialect's listener: a TCP server on ``--wyoming-port`` (off by default),
started and stopped with the application.

Wyoming carries no credentials.  With keys configured, only loopback peers are
served (others get an ``error`` event, code ``forbidden``); the listener may
bind beyond loopback only with ``--allow-anonymous`` (checked at start-up).
Sessions count against the server's session limit like every other dialect's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from streamvox.stream_server.dialects.wyoming.handler import WyomingHandler
from streamvox.stream_server.runtime import Refusal, ServerRuntime
from wyoming.error import Error
from wyoming.event import async_write_event

log = logging.getLogger(__name__)


def add_routes(app: web.Application, runtime: ServerRuntime, version: str) -> None:
    """Serve Wyoming on ``runtime.config.wyoming_port`` while the app runs (if it is set)."""
    port = runtime.config.wyoming_port
    if port is None:
        return

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        admission = runtime.admit(runtime.access.check_peer(peer[0] if peer else None))
        if isinstance(admission, Refusal):
            try:
                await async_write_event(Error(text=admission.message, code=admission.kind).event(), writer)
            except ConnectionError:
                pass
            writer.close()
            return
        with admission:
            handler = WyomingHandler(reader, writer, runtime.engine_client, admission.voices, runtime.config,
                                     runtime.metrics, version)  # fmt: skip
            try:
                await runtime.serve(handler, handler.run)
            except (ValueError, KeyError, TypeError, AttributeError, asyncio.IncompleteReadError) as exc:
                # The wyoming reader raises on a line that is not an event (not UTF-8 or JSON, longer
                # than the stream limit, not an object, fields of the wrong type) or data cut short.
                log.info("wyoming client %s sent something unreadable (%s); closed", peer, type(exc).__name__)
                runtime.metrics.errors.labels("wyoming_invalid_event").inc()
                writer.close()
            except ConnectionError:
                pass

    async def listener(_app: web.Application) -> AsyncIterator[None]:
        server = await asyncio.start_server(serve, host=runtime.config.wyoming_host, port=port)
        runtime.wyoming_port = server.sockets[0].getsockname()[1]
        log.info("Wyoming on tcp://%s:%d", runtime.config.wyoming_host, runtime.wyoming_port)
        yield
        server.close()
        await server.wait_closed()

    app.cleanup_ctx.append(listener)

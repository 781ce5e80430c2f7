"""The Wyoming dialect's listener: a TCP server on ``--wyoming-port`` (off by default),
started and stopped with the application."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from streamvox.stream_server.dialects.wyoming.handler import WyomingHandler
from streamvox.stream_server.runtime import ServerRuntime

log = logging.getLogger(__name__)


def add_routes(app: web.Application, runtime: ServerRuntime, version: str) -> None:
    """Serve Wyoming on ``runtime.config.wyoming_port`` while the app runs (if it is set)."""
    port = runtime.config.wyoming_port
    if port is None:
        return

    async def listener(_app: web.Application) -> AsyncIterator[None]:
        def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WyomingHandler:
            return WyomingHandler(
                reader, writer, runtime.engine_client, runtime.voices, runtime.config, runtime.metrics, version
            )

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await handler(reader, writer).run()

        server = await asyncio.start_server(serve, host=runtime.config.wyoming_host, port=port)
        runtime.wyoming_port = server.sockets[0].getsockname()[1]
        log.info("Wyoming on tcp://%s:%d", runtime.config.wyoming_host, runtime.wyoming_port)
        yield
        server.close()
        await server.wait_closed()

    app.cleanup_ctx.append(listener)

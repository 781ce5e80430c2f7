"""The aiohttp application: each dialect's routes, health, metrics, the demo, engine lifecycle, drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.auth import ACCESS, access_middleware, protect
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.dialects.cartesia import routes as cartesia_routes
from streamvox.stream_server.dialects.elevenlabs import routes as elevenlabs_routes
from streamvox.stream_server.dialects.native import routes as native_routes
from streamvox.stream_server.dialects.native.events import PROTOCOL_VERSION
from streamvox.stream_server.dialects.native.routes import STREAM_PATH
from streamvox.stream_server.dialects.openai import routes as openai_routes
from streamvox.stream_server.dialects.wyoming import routes as wyoming_routes
from streamvox.stream_server.metrics import CONTENT_TYPE
from streamvox.stream_server.routes import aiohttp_refusal
from streamvox.stream_server.runtime import ServerRuntime, package_version
from streamvox.web_demo import static_dir

log = logging.getLogger(__name__)

RUNTIME = web.AppKey("runtime", ServerRuntime)
STATIC_FILES = web.AppKey("static_files", dict)

__all__ = ["RUNTIME", "STREAM_PATH", "create_app", "package_version"]


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 while serving; 503 while draining, or with the engine's ``problem``."""
    ok, body = request.app[RUNTIME].health(PROTOCOL_VERSION)
    return web.json_response(body, status=200 if ok else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    return web.Response(body=request.app[RUNTIME].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(static_dir() / "index.html")


async def static_file(request: web.Request) -> web.FileResponse:
    """``GET /static/{name}``: only the demo's own files, looked up by exact name.

    (Not ``add_static``: an editable install links the files, and aiohttp
    rightly refuses to follow links out of a static folder.)
    """
    path = request.app[STATIC_FILES].get(request.match_info["name"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    app[RUNTIME].metrics.thread_cpu.mark_event_loop()
    engine = app[RUNTIME].engine
    engine.start()
    yield
    await asyncio.to_thread(engine.stop)


async def _drain_sessions(app: web.Application) -> None:
    runtime = app[RUNTIME]
    if runtime.sessions:
        log.info("draining %d session(s)", len(runtime.sessions))
    await runtime.drain()


def create_app(config: ServerConfig | None = None, voices: VoiceRegistry | None = None) -> web.Application:
    """Build the app; voices load here (before serving) unless a registry is given."""
    config = config or ServerConfig()
    runtime = ServerRuntime.build(config, voices)
    app = web.Application(client_max_size=config.hard_message_bytes, middlewares=[access_middleware])
    app[RUNTIME] = runtime
    app[ACCESS] = runtime.access
    app.cleanup_ctx.append(_engine_ctx)
    app.on_shutdown.append(_drain_sessions)
    native_routes.add_routes(app, runtime)
    openai_routes.add_routes(app, runtime)
    elevenlabs_routes.add_routes(app, runtime)
    cartesia_routes.add_routes(app, runtime)
    wyoming_routes.add_routes(app, runtime, package_version())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", protect(metrics_handler, "native", native_routes.CREDENTIALS,
                                           aiohttp_refusal(native_routes.http_refusal)))  # fmt: skip
    app.router.add_get("/", index)
    app[STATIC_FILES] = {p.name: p for p in static_dir().iterdir() if p.is_file()}
    app.router.add_get("/static/{name}", static_file)
    return app

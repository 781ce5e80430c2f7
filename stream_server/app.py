"""The aiohttp application: routes, typed app state, engine lifecycle, graceful drain."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web
from streamvox.engine.core import EngineCore
from streamvox.engine.voices import VoiceRegistry
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.metrics import CONTENT_TYPE, Metrics
from streamvox.stream_server.protocol import PROTOCOL_VERSION, error_event
from streamvox.stream_server.session import Session
from streamvox.web_demo import static_dir

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", ServerConfig)
VOICES = web.AppKey("voices", VoiceRegistry)
ENGINE = web.AppKey("engine", EngineCore)
SESSIONS = web.AppKey("sessions", set)
DRAINING = web.AppKey("draining", list)
STATIC_FILES = web.AppKey("static_files", dict)
METRICS = web.AppKey("metrics", Metrics)

STREAM_PATH = "/v1/stream"


def package_version() -> str:
    try:
        return version("streamvox")
    except PackageNotFoundError:
        return "0+unknown"


async def stream_handler(request: web.Request) -> web.StreamResponse:
    """``GET /v1/stream``: the protocol v1 WebSocket."""
    app = request.app
    config = app[CONFIG]
    # No permessage-deflate: Opus and PCM do not compress, and deflating every packet costs CPU.
    ws = web.WebSocketResponse(max_msg_size=config.hard_message_bytes, heartbeat=30.0, compress=False)
    await ws.prepare(request)
    if app[DRAINING]:
        await ws.close(code=1001, message=b"server shutting down")
        return ws
    metrics = app[METRICS]
    if len(app[SESSIONS]) >= config.max_sessions:
        metrics.sessions_rejected.inc()
        metrics.errors.labels("overloaded").inc()
        message = f"server at capacity ({config.max_sessions} sessions); retry later"
        await ws.send_str(json.dumps(error_event("overloaded", message, fatal=True)))
        await ws.close(code=1013, message=b"overloaded")
        return ws
    session = Session(ws, app[ENGINE], app[VOICES], config, metrics, request.transport)
    app[SESSIONS].add(session)
    metrics.sessions.inc()
    try:
        await session.run()
    finally:
        app[SESSIONS].discard(session)
        metrics.sessions.dec()
    return ws


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 while serving, 503 while draining or if the engine thread died."""
    app = request.app
    ok = app[ENGINE].running and not app[DRAINING]
    body = {
        "status": "ok" if ok else ("draining" if app[DRAINING] else "engine_down"),
        "version": package_version(),
        "protocol": PROTOCOL_VERSION,
        "sessions": len(app[SESSIONS]),
        "voices": len(app[VOICES].infos()),
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text exposition."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def list_voices(request: web.Request) -> web.Response:
    """``GET /v1/voices``: id, language, sample rate and kind of every voice."""
    return web.json_response({"voices": [v.to_json() for v in request.app[VOICES].infos()]})


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
    engine = app[ENGINE]
    engine.start()
    yield
    await asyncio.to_thread(engine.stop)


async def _drain_sessions(app: web.Application) -> None:
    app[DRAINING].append(True)
    sessions = list(app[SESSIONS])
    if sessions:
        log.info("draining %d session(s)", len(sessions))
        timeout = app[CONFIG].drain_timeout_s
        await asyncio.gather(*(s.drain(timeout) for s in sessions), return_exceptions=True)


def create_app(config: ServerConfig | None = None, voices: VoiceRegistry | None = None) -> web.Application:
    """Build the app; voices load here (before serving) unless a registry is given."""
    config = config or ServerConfig()
    if voices is None:
        voices = VoiceRegistry.from_paths(
            config.voice_paths,
            config.include_bundled_voice,
            config.threads,
            gpt_sovits_dirs=config.gpt_sovits_voice_dirs,
        )
    app = web.Application(client_max_size=config.hard_message_bytes)
    app[CONFIG] = config
    app[VOICES] = voices
    app[ENGINE] = EngineCore(config.engine)
    app[METRICS] = Metrics(app[ENGINE])
    app[SESSIONS] = set()
    app[DRAINING] = []
    app.cleanup_ctx.append(_engine_ctx)
    app.on_shutdown.append(_drain_sessions)
    app.router.add_get(STREAM_PATH, stream_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/voices", list_voices)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/", index)
    app[STATIC_FILES] = {p.name: p for p in static_dir().iterdir() if p.is_file()}
    app.router.add_get("/static/{name}", static_file)
    return app

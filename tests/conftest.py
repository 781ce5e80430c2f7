"""Shared fixtures: the bundled voice loaded once, running engines, a real server on a free port.

Every engine and server made here is checked for leaked streams when its test ends: a stream
still held by the engine after its client has gone is a bug (a zombie context).
Helpers that tests import live in ``tests/helpers/``, never here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from streamvox.engine.backends.piper.voice import PiperVoice
from streamvox.engine.core import EngineConfig, EngineCore
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import RUNTIME, STREAM_PATH, create_app
from streamvox.stream_server.config import ServerConfig

LEAK_WAIT_S = 10.0
"""How long a finished test's engine may take to drop its last stream (aborts are asynchronous)."""


def assert_no_leaked_streams(engine: EngineCore) -> None:
    deadline = time.monotonic() + LEAK_WAIT_S
    while engine.active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.active_streams == 0, f"{engine.active_streams} engine stream(s) leaked past the test"


@pytest.fixture(scope="session")
def registry() -> VoiceRegistry:
    return VoiceRegistry.load()


@pytest.fixture(scope="session")
def voice(registry: VoiceRegistry) -> PiperVoice:
    return registry.get(None)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def windowed_voice() -> PiperVoice:
    """The bundled voice decoding windows with context frames (no streaming decoder): the path
    voices whose decoder ``stream_graph`` cannot rewrite take."""
    from streamvox.engine.backends.piper.backend import bundled_voice_path

    return PiperVoice.load(bundled_voice_path(), stream_decode=False)


@pytest.fixture()
def make_engine(registry: VoiceRegistry) -> Iterator[Callable[..., EngineCore]]:
    """Start engines for a test (``make_engine(config, voices=registry)``); each is stopped after it.

    ``check_leaks=False`` exempts an engine whose test leaves streams open on purpose."""
    started: list[tuple[EngineCore, bool]] = []

    def make(
        config: EngineConfig | None = None, voices: VoiceRegistry | None = None, check_leaks: bool = True
    ) -> EngineCore:
        core = EngineCore(voices or registry, config)
        core.start()
        started.append((core, check_leaks))
        return core

    yield make
    try:
        for core, check in started:
            if check and core.running:
                assert_no_leaked_streams(core)
    finally:
        for core, _ in started:
            core.stop()


@pytest.fixture()
def engine(make_engine: Callable[..., EngineCore]) -> EngineCore:
    return make_engine()


@pytest.fixture()
async def server(aiohttp_server: Any, registry: VoiceRegistry) -> AsyncIterator[str]:
    """A real streamvox server on a free loopback port; yields its WebSocket URL."""
    config = ServerConfig(
        max_message_bytes=8 * 1024,
        max_text_chars=4000,
        max_context_chars=6000,
        engine=EngineConfig(max_lead_s=None),  # clients here read as fast as they can
    )
    app = create_app(config, registry)
    srv = await aiohttp_server(app, host="127.0.0.1")
    yield f"ws://127.0.0.1:{srv.port}{STREAM_PATH}"
    engine = app[RUNTIME].engine
    deadline = time.monotonic() + LEAK_WAIT_S
    while engine.active_streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert engine.active_streams == 0, f"{engine.active_streams} engine stream(s) leaked past the test"


DIALECT_SEED = 7
"""The seed the dialect server gives every context (the dialects have no seed field)."""


@pytest.fixture()
async def dialect_server(aiohttp_server: Any, registry: VoiceRegistry) -> AsyncIterator[tuple[str, Any]]:
    """A real server for the compatible dialects: seeded by default, with vendor voice aliases;
    yields its ``http://host:port`` base and the app."""
    config = ServerConfig(
        default_seed=DIALECT_SEED,
        voice_aliases=(("21m00Tcm4TlvDq8ikWAM", "en_US-joe-medium"), ("joe", "en_US-joe-medium")),
        engine=EngineConfig(max_lead_s=None),
        wyoming_port=0,
    )
    app = create_app(config, registry)
    srv = await aiohttp_server(app, host="127.0.0.1")
    yield f"http://127.0.0.1:{srv.port}", app
    engine = app[RUNTIME].engine
    deadline = time.monotonic() + LEAK_WAIT_S
    while engine.active_streams and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert engine.active_streams == 0, f"{engine.active_streams} engine stream(s) leaked past the test"


@pytest.fixture()
async def tls_dialect_server(
    aiohttp_server: Any, registry: VoiceRegistry, tmp_path: Any
) -> AsyncIterator[tuple[str, Any, Any]]:
    """The dialect server behind TLS, its certificate from a CA made here (for the SDKs that only
    speak ``wss://``); yields ``host:port``, the CA's PEM file and the app."""
    import ssl

    import trustme

    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ssl)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = ServerConfig(
        default_seed=DIALECT_SEED,
        voice_aliases=(("21m00Tcm4TlvDq8ikWAM", "en_US-joe-medium"), ("joe", "en_US-joe-medium")),
        engine=EngineConfig(max_lead_s=None),
    )
    app = create_app(config, registry)
    srv = await aiohttp_server(app, host="127.0.0.1", ssl=server_ssl)
    yield f"127.0.0.1:{srv.port}", ca_file, app

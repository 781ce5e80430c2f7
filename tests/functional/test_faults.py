"""Faults inside the engine, injected through a test-only backend wrapper (``tests/helpers/faults.py``):
a unit that raises, a worker that dies, a unit that hangs past its deadline.  Each fails only its
own context, with a generic message (details in the log), and every other session is served."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import RUNTIME, create_app
from streamvox.stream_server.config import ServerConfig

from tests.helpers.faults import FaultyBackend, faulty_registry
from tests.helpers.sockets import speak_one_context

DEADLINE_S = 1.0


@pytest.fixture()
async def fault_server(aiohttp_server: Any, registry: VoiceRegistry) -> AsyncIterator[tuple[str, FaultyBackend, Any]]:
    voices, backend = faulty_registry(registry, hang_s=30.0)
    config = ServerConfig(engine=EngineConfig(max_lead_s=None, workers=1, unit_deadline_s=DEADLINE_S))
    app = create_app(config, voices)
    srv = await aiohttp_server(app, host="127.0.0.1")
    yield f"127.0.0.1:{srv.port}", backend, app
    backend.released.set()
    engine = app[RUNTIME].engine
    deadline = time.monotonic() + 10
    while (engine.active_streams or engine.stuck_workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert engine.active_streams == 0 and engine.stuck_workers == 0


async def _speak(address: str, text: str, voice: str | None = None) -> dict[str, Any]:
    """One context; its last event (``done`` or ``error``) and the audio bytes before it."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{address}/v1/stream?protocol=2") as ws:
        assert json.loads((await ws.receive(timeout=30)).data)["type"] == "ready"
        return await speak_one_context(ws, text, voice)


async def _health(address: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/healthz") as r:
        return r.status, await r.json()


@pytest.mark.parametrize("trigger", ["FAULT_RAISE", "FAULT_DIE"])
async def test_a_unit_that_raises_fails_its_context_only(
    fault_server: tuple[str, FaultyBackend, Any], trigger: str, caplog: pytest.LogCaptureFixture
) -> None:
    address, _, _ = fault_server
    caplog.set_level(logging.ERROR, logger="streamvox.engine.core")
    failed, healthy = await asyncio.gather(
        _speak(address, f"This one breaks {trigger} here.", voice="faulty"),
        _speak(address, "This one is fine and finishes."),
    )
    assert failed["type"] == "error" and failed["code"] == "synthesis_failed"
    assert "secret" not in failed["message"] and "injected" not in failed["message"]
    assert "the server log has the details" in failed["message"]
    assert healthy["type"] == "done" and healthy["audio_bytes"] > 1000
    assert any("injected" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)  # the details: log only
    after = await _speak(address, "And the engine still serves.", voice="faulty")
    assert after["type"] == "done"  # the worker is back
    assert (await _health(address))[0] == 200


async def test_a_unit_past_its_deadline_fails_and_a_spare_worker_serves_the_rest(
    fault_server: tuple[str, FaultyBackend, Any],
) -> None:
    address, backend, app = fault_server
    hung = asyncio.create_task(_speak(address, "This one hangs FAULT_HANG for a long time.", voice="faulty"))
    failed = await asyncio.wait_for(hung, DEADLINE_S + 20)
    assert failed["code"] == "synthesis_failed" and "longer than 1 s" in failed["message"]
    status, body = await _health(address)
    assert status == 503 and "stuck" in body["problem"]  # the only worker is stuck: say so
    served = await _speak(address, "Meanwhile this one is served by the spare worker.")
    assert served["type"] == "done" and served["audio_bytes"] > 1000
    backend.released.set()  # the stuck unit returns
    deadline = time.monotonic() + 10
    while app[RUNTIME].engine.stuck_workers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await _health(address))[0] == 200

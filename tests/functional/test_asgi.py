"""The ASGI application (what a Ray Serve replica serves) under uvicorn on a free loopback port:
the native protocol gives the aiohttp server's bytes, and health, voices, metrics, keys, origins
and bad input behave as there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import uvicorn
import websockets
from streamvox.bench.harness import free_port
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.asgi import StreamvoxAsgi, create_asgi_app
from streamvox.stream_server.config import ServerConfig

from tests.helpers.ws import collect_until, recv_json, send, speak_whole

TEXT = "Good morning! The weather today is sunny with a light breeze from the west."


async def serve_asgi(app: StreamvoxAsgi) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", ws="websockets-sansio")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture()
async def asgi(registry: VoiceRegistry) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    config = ServerConfig(max_message_bytes=8 * 1024, engine=EngineConfig(max_lead_s=None), drain_timeout_s=5)
    async for served in serve_asgi(create_asgi_app(config, registry)):
        yield served


@pytest.fixture()
async def keyed_asgi(registry: VoiceRegistry) -> AsyncIterator[str]:
    config = ServerConfig(api_keys="tester=sv-test-key-123456", engine=EngineConfig(max_lead_s=None))
    async for address, _ in serve_asgi(create_asgi_app(config, registry)):
        yield address


@pytest.mark.parametrize("fmt", ["opus", {"codec": "pcm_s16le", "sample_rate": 16000}])
async def test_seeded_audio_is_the_aiohttp_servers(asgi: tuple[str, Any], server: str, fmt: Any) -> None:
    address, _ = asgi
    settings = {"format": fmt, "seed": 11}
    theirs = await speak_whole(server, TEXT, settings)
    ours = await speak_whole(f"ws://{address}/v1/stream", TEXT, settings)
    assert len(ours.audio) > 3 and ours.audio == theirs.audio
    assert [e["type"] for e in ours.events] == [e["type"] for e in theirs.events]


async def test_protocol_two_and_bad_input_behave_as_on_aiohttp(asgi: tuple[str, Any]) -> None:
    address, _ = asgi
    async with websockets.connect(f"ws://{address}/v1/stream?protocol=2", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"
        await ws.send("{not json")
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "invalid_json" and not error["fatal"]
        await send(ws, type="text", text="Still here.", context_id="a")
        await send(ws, type="end", context_id="a")
        exchange = await collect_until(ws)
    assert exchange.of_type("done") and exchange.audio
    async with websockets.connect(f"ws://{address}/v1/stream?protocol=9") as ws:
        refusal = await recv_json(ws)
        assert refusal["code"] == "invalid_value"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    async with websockets.connect(f"ws://{address}/v1/stream", max_size=None) as ws:
        await recv_json(ws)
        await ws.send("x" * 9000)  # past max_message_bytes: an error, the session goes on
        assert (await recv_json(ws))["code"] == "message_too_large"
        await ws.send("x" * (1024 * 1024 + 10))  # past the hard limit: the socket closes
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_health_voices_and_metrics(asgi: tuple[str, Any]) -> None:
    address, _ = asgi
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{address}/healthz") as response:
            health = await response.json()
            assert response.status == 200 and health["status"] == "ok" and health["voices"] == 1
        async with http.get(f"http://{address}/v1/voices") as response:
            assert (await response.json())["voices"][0]["id"] == "en_US-joe-medium"
        async with http.get(f"http://{address}/metrics") as response:
            assert response.status == 200 and "streamvox_sessions" in await response.text()
        async with http.get(f"http://{address}/v1/nothing") as response:
            assert response.status == 404 and (await response.json())["error"] == "not_found"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"ws://{address}/elsewhere"):
            pass


async def test_keys_and_origins_are_checked_as_on_aiohttp(keyed_asgi: str) -> None:
    url = f"ws://{keyed_asgi}/v1/stream"
    async with websockets.connect(url) as ws:
        refusal = await recv_json(ws)
        assert refusal["type"] == "error" and refusal["code"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    async with websockets.connect(f"{url}?token=sv-test-key-123456", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"
    headers = {"Authorization": "Bearer sv-test-key-123456"}
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url, additional_headers={**headers, "Origin": "https://evil.example"}):
            pass
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{keyed_asgi}/v1/voices") as response:
            assert response.status == 401 and (await response.json())["code"] == "unauthorized"
        async with http.get(f"http://{keyed_asgi}/v1/voices", headers=headers) as response:
            assert response.status == 200

"""Admission control, playback reports and pacing, and the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
import websockets
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import STREAM_PATH, create_app
from streamvox.stream_server.config import ServerConfig

from tests.helpers.ws import collect_until, recv_json, send


async def start(aiohttp_server, registry: VoiceRegistry, **config) -> tuple[str, str]:
    srv = await aiohttp_server(create_app(ServerConfig(**config), registry), host="127.0.0.1")
    return f"ws://127.0.0.1:{srv.port}{STREAM_PATH}", f"http://127.0.0.1:{srv.port}"


async def test_sessions_beyond_the_limit_are_refused_with_1013(aiohttp_server, registry) -> None:
    url, _ = await start(aiohttp_server, registry, max_sessions=2)
    async with websockets.connect(url) as first, websockets.connect(url) as second:
        await recv_json(first)
        await recv_json(second)
        async with websockets.connect(url) as third:
            error = await recv_json(third)
            assert error["type"] == "error" and error["code"] == "overloaded" and error["fatal"] is True
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(third.recv(), 10)
            assert info.value.rcvd.code == 1013
        # The admitted sessions are unaffected.
        await send(first, type="text", text="Still served.")
        await send(first, type="end")
        assert (await collect_until(first)).of_type("done")
    # Once a session leaves, a new one is admitted.
    async with websockets.connect(url) as again:
        assert (await recv_json(again))["type"] == "ready"


async def test_generation_is_paced_to_the_listener(aiohttp_server, registry) -> None:
    url, _ = await start(aiohttp_server, registry, engine=EngineConfig(max_lead_s=1.0))
    text = "Pacing keeps a stream close to its listener, so other streams get the processor when they need it."
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        started = time.monotonic()
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        exchange = await collect_until(ws)
    elapsed = time.monotonic() - started
    seconds = exchange.of_type("done")[0]["seconds"]
    assert seconds > 4
    # Unpaced this takes well under a second; paced it cannot finish before playback is within
    # the lead (1 s) plus the last window (at most 512 frames, 6 s, but here the last is short).
    assert elapsed > seconds - 1.0 - 3.0


async def test_reports_release_the_pace_and_count_underruns(aiohttp_server, registry) -> None:
    url, base = await start(aiohttp_server, registry, engine=EngineConfig(max_lead_s=0.5))
    text = "A listener far ahead in playback lets the server run at full speed. " * 2
    async with websockets.connect(url, max_size=None) as ws:
        await recv_json(ws)
        started = time.monotonic()
        await send(ws, type="text", text=text, context_id="r")
        await send(ws, type="flush", context_id="r")
        while not isinstance(await asyncio.wait_for(ws.recv(), 30), bytes):
            pass
        await send(ws, type="report", context_id="r", played_ms=100_000, underruns=2, underrun_ms=120)
        await send(ws, type="end", context_id="r")
        done = (await collect_until(ws)).of_type("done")[0]
        assert time.monotonic() - started < done["seconds"] - 2.0
        await send(ws, type="report", played_ms=-5)
        assert (await recv_json(ws))["code"] == "invalid_value"
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        body = await response.text()
    assert "streamvox_client_underruns_total 2.0" in body
    assert "streamvox_client_underrun_seconds_total 0.12" in body


async def test_metrics_endpoint(server: str) -> None:
    async with websockets.connect(server, max_size=None) as ws:
        await recv_json(ws)
        await send(ws, type="text", text="Counting for the metrics.")
        await send(ws, type="end")
        await collect_until(ws)
        await ws.send("{broken")
        await recv_json(ws)
        base = server.replace("ws://", "http://").rsplit("/v1/", 1)[0]
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body = await response.text()
    assert "streamvox_sessions 1.0" in body
    assert "streamvox_ttfa_seconds_count 1.0" in body
    assert "streamvox_rtf_count 1.0" in body
    assert 'streamvox_contexts_total{outcome="done"} 1.0' in body
    assert 'streamvox_errors_total{code="invalid_json"} 1.0' in body
    assert "streamvox_engine_streams 0.0" in body
    assert "streamvox_engine_queue_depth 0.0" in body
    assert "streamvox_engine_units_in_flight 0.0" in body
    assert 'streamvox_engine_units_by_parallelism{running="1"}' in body
    assert "streamvox_engine_late_units 0.0" in body  # one short context on an idle server
    assert "streamvox_engine_late_seconds 0.0" in body
    assert "streamvox_engine_late_units_behind_lead_work 0.0" in body
    cpu = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("streamvox_cpu_seconds_total{")
    }
    assert set(cpu) == {"event_loop", "engine", "workers", "runtime_pools", "other"}
    assert cpu["workers"] > 0  # the context was spoken on them


async def test_a_client_that_stops_reading_is_held_then_closed(aiohttp_server, registry) -> None:
    url, base = await start(
        aiohttp_server, registry, max_unsent_s=1.0, slow_reader_timeout_s=1.0, engine=EngineConfig(max_lead_s=None)
    )
    port = int(base.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    # max_queue=1: the client library stops reading the socket once one frame is waiting.
    stalled = await websockets.connect(url, sock=sock, max_queue=1, max_size=None)
    await recv_json(stalled)
    await send(stalled, type="configure", format={"codec": "pcm_s16le", "sample_rate": 48000})
    await recv_json(stalled)
    await send(stalled, type="text", text="A client that stops reading must not cost unbounded memory. " * 36)
    await send(stalled, type="end")

    async def metric(name: str) -> float:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        return 0.0

    async with websockets.connect(url, max_size=None) as healthy:  # served normally meanwhile
        await recv_json(healthy)
        await send(healthy, type="text", text="Other sessions are unaffected.")
        await send(healthy, type="end")
        assert (await collect_until(healthy)).of_type("done")
    deadline = time.monotonic() + 60
    while await metric('streamvox_errors_total{code="slow_reader"}') < 1:
        assert time.monotonic() < deadline, "the stalled client was never closed"
        await asyncio.sleep(0.2)
    # The engine stopped generating for it: the context ended as slow_reader, not done.
    assert await metric('streamvox_contexts_total{outcome="slow_reader"}') == 1
    assert await metric('streamvox_contexts_total{outcome="done"}') == 1
    received = 0
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            received += len(await asyncio.wait_for(stalled.recv(), 10))
    # Far less than the context (about 2 minutes of 48 kHz s16 PCM, 12 MB) reached the socket:
    # generation stopped once the socket buffers were full and 1 s more was held.
    assert 0 < received < 48000 * 2 * 80
    while await metric("streamvox_sessions") > 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert await metric("streamvox_engine_streams") == 0

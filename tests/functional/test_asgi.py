"""The ASGI application (what a Ray Serve replica serves) under uvicorn on a free loopback port:
the native protocol gives the aiohttp server's bytes, and health, voices, metrics, keys, origins
and bad input behave as there."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
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

from tests.helpers.dialect_ws import cartesia_pcm, elevenlabs_multi_pcm, openai_pcm
from tests.helpers.ws import collect_until, recv_json, send, speak_whole

TEXT = "Good morning! The weather today is sunny with a light breeze from the west."


async def serve_asgi(app: StreamvoxAsgi, **tls: str) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """``tls``: uvicorn's ``ssl_certfile`` and ``ssl_keyfile``, for ``wss://``."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", ws="websockets-sansio", **tls
        )  # fmt: skip
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


def _dialect_config() -> ServerConfig:
    """As the ``dialect_server`` fixture's: its seed and vendor voice aliases."""
    aliases = (("21m00Tcm4TlvDq8ikWAM", "en_US-joe-medium"), ("joe", "en_US-joe-medium"))
    return ServerConfig(default_seed=7, voice_aliases=aliases, engine=EngineConfig(max_lead_s=None))


@pytest.fixture()
async def tls_dialect_asgi(registry: VoiceRegistry, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """The ASGI app configured as the ``dialect_server`` fixture, behind TLS from a CA made here
    (the SDKs speak only ``wss://``); yields ``host:port`` and the CA's PEM file."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    app = create_asgi_app(_dialect_config(), registry)
    async for address, _ in serve_asgi(app, ssl_certfile=str(files["cert"]), ssl_keyfile=str(files["key"])):
        yield address, files["ca"]


def _cartesia_sdk_pcm(address: str, text: str) -> bytes:
    from cartesia import Cartesia

    client = Cartesia(api_key="not-checked", base_url=f"https://{address}")
    with client.tts.websocket_connect() as connection:
        output_format = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
        ctx = connection.context(model_id="sonic-3", voice={"mode": "id", "id": "joe"}, output_format=output_format)
        ctx.push(text)
        ctx.no_more_inputs()
        events = list(ctx.receive())
    assert events[-1].type == "done"
    return b"".join(base64.b64decode(e.data) for e in events if e.type == "chunk")


@pytest.fixture()
async def dialect_asgi(registry: VoiceRegistry) -> AsyncIterator[str]:
    """The ASGI app configured as the ``dialect_server`` fixture (its seed, its aliases)."""
    async for address, _ in serve_asgi(create_asgi_app(_dialect_config(), registry)):
        yield address


async def test_the_dialect_sockets_give_the_aiohttp_servers_bytes(
    tls_dialect_asgi: tuple[str, Path], dialect_server: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cartesia's SDK and ElevenLabs' multi-stream socket (Pipecat's messages), each through the
    ASGI app and through the aiohttp server, with the same seed: the same PCM."""
    address, ca_file = tls_dialect_asgi
    aiohttp_ws = dialect_server[0].replace("http://", "ws://")
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    through_asgi = await asyncio.to_thread(_cartesia_sdk_pcm, address, TEXT)
    assert len(through_asgi) > 24000 and through_asgi == await cartesia_pcm(aiohttp_ws, "joe", TEXT)
    context = ssl.create_default_context(cafile=str(ca_file))
    multi = await elevenlabs_multi_pcm(f"wss://{address}", "joe", TEXT, ssl_context=context)
    assert len(multi) > 22050 and multi == await elevenlabs_multi_pcm(aiohttp_ws, "joe", TEXT)


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


async def test_elevenlabs_keys_in_the_first_message_and_refusals_its_way(keyed_asgi: str) -> None:
    url = f"ws://{keyed_asgi}/v1/text-to-speech/en_US-joe-medium/stream-input?output_format=pcm_16000"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"text": " ", "xi_api_key": "sv-test-key-123456"}))
        await ws.send(json.dumps({"text": "Hello there. "}))
        await ws.send(json.dumps({"text": ""}))
        messages = [json.loads(await asyncio.wait_for(ws.recv(), 30))]
        while not messages[-1].get("isFinal"):
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    assert sum(len(base64.b64decode(m["audio"])) for m in messages if m.get("audio")) > 16000
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"text": " ", "xi_api_key": "sv-wrong-key"}))
        refusal = json.loads(await ws.recv())
        assert refusal["error"] == "invalid_api_key"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_the_http_routes_give_the_aiohttp_servers_answers(
    dialect_asgi: str, dialect_server: tuple[str, Any]
) -> None:
    """OpenAI's speech through the real ``openai`` package, ElevenLabs' HTTP speech with
    timestamps and its voice list: the same bytes and bodies through the ASGI app as from aiohttp."""
    import openai

    theirs = dialect_server[0]
    ours = f"http://{dialect_asgi}"
    pcm = await openai_pcm(ours, TEXT)
    assert len(pcm) > 24000 and pcm == await openai_pcm(theirs, TEXT)
    with pytest.raises(openai.BadRequestError) as refused:
        await openai_pcm(ours, TEXT, speed=9.0)
    assert refused.value.status_code == 400 and refused.value.body["param"] == "speed"
    url = "/v1/text-to-speech/en_US-joe-medium/stream/with-timestamps?output_format=pcm_16000"
    async with aiohttp.ClientSession() as http:
        answers = []
        for base in (ours, theirs):
            async with http.post(base + url, json={"text": "Hello there, friend."}) as response:
                assert response.status == 200 and response.content_type == "application/json"
                answers.append([json.loads(line) for line in (await response.read()).splitlines()])
            async with http.get(f"{base}/elevenlabs/v1/voices") as response:
                answers.append(await response.json())
            async with http.post(f"{base}/v1/text-to-speech/nobody/stream", json={"text": "Hi."}) as response:
                answers.append((response.status, await response.json()))
    assert answers[0] and answers[:3] == answers[3:]
    assert answers[2][0] == 404 and answers[2][1]["detail"]["status"] == "voice_not_found"


async def test_tokens_and_refusals_in_each_dialects_shape(keyed_asgi: str) -> None:
    key = {"Authorization": "Bearer sv-test-key-123456"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{keyed_asgi}/v1/tokens", json={"ttl_s": 60}, headers=key) as response:
            token = (await response.json())["token"]
            assert response.status == 200
        async with http.post(f"http://{keyed_asgi}/v1/tokens", json={"ttl_s": -1}, headers=key) as response:
            assert response.status == 400 and (await response.json())["code"] == "invalid_value"
        speech = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}
        async with http.post(f"http://{keyed_asgi}/v1/audio/speech", json=speech) as response:
            body = await response.json()
            assert response.status == 401 and body["error"]["code"] == "invalid_api_key"
        url = f"http://{keyed_asgi}/v1/text-to-speech/en_US-joe-medium/stream"
        async with http.post(url, json={"text": "Hi."}, headers={"xi-api-key": "sv-wrong"}) as response:
            assert response.status == 401 and (await response.json())["detail"]["status"] == "invalid_api_key"
        async with http.post(f"http://{keyed_asgi}/v1/audio/speech", json={"input": "x" * 2_000_000}) as response:
            assert response.status == 413
    async with websockets.connect(f"ws://{keyed_asgi}/v1/stream?token={token}", max_size=None) as ws:
        assert (await recv_json(ws))["type"] == "ready"

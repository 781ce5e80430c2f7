"""Keys, browser tokens, origins and per-key limits on every route and dialect of a real server.

Each protected route is tried without a key, with a wrong key, a revoked key, an expired and a
tampered token, a token for another voice or dialect, and from a disallowed Origin: each is
refused with its dialect's documented status or close code.  With a good key or token it speaks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.app import RUNTIME, create_app
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.keys import KeyLimits, KeysFile, new_key
from streamvox.stream_server.tokens import TokenSigner
from wyoming.client import AsyncTcpClient
from wyoming.event import Event

from tests.helpers.sockets import speak_one_context

VOICE = "en_US-joe-medium"
TOKEN_SECRET = "a-token-secret-for-these-tests-only"


class Keys:
    def __init__(self, path: Path) -> None:
        contents = KeysFile(TOKEN_SECRET, [])
        self.path = path
        self.full, record = new_key("full")
        contents.add(record)
        self.revoked, record = new_key("gone")
        contents.add(record)
        self.elsewhere, record = new_key("elsewhere", voices=["no-such-voice"])
        contents.add(record)
        self.one_session, record = new_key("one-session", KeyLimits(sessions=1))
        contents.add(record)
        self.few_chars, record = new_key("few-chars", KeyLimits(chars_per_minute=40))
        contents.add(record)
        contents.revoke("gone")
        contents.write(path)
        self.wyoming_port = 0


@pytest.fixture()
async def auth_server(aiohttp_server: Any, registry: VoiceRegistry, tmp_path: Path) -> AsyncIterator[tuple[str, Keys]]:
    keys = Keys(tmp_path / "keys")
    config = ServerConfig(keys_file=str(keys.path), token_secret=TOKEN_SECRET, default_seed=3, wyoming_port=0,
                          allow_origins=("https://app.example",), engine=EngineConfig(max_lead_s=None))  # fmt: skip
    app = create_app(config, registry)
    srv = await aiohttp_server(app, host="127.0.0.1")
    keys.wyoming_port = app[RUNTIME].wyoming_port
    yield f"127.0.0.1:{srv.port}", keys
    runtime = app[RUNTIME]
    deadline = time.monotonic() + 10
    while (runtime.engine.active_streams or runtime.sessions) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert runtime.engine.active_streams == 0 and not runtime.sessions
    assert runtime.access.quotas.sessions("one-session") == 0  # type: ignore[attr-defined]


async def _token(address: str, key: str, **body: Any) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{address}/v1/tokens", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200, await r.text()
            return (await r.json())["token"]


def _expired_token() -> str:
    return TokenSigner(TOKEN_SECRET).issue("full", time.time() - 400, ttl_s=300)[0]


def _tampered(token: str) -> str:
    body, _, signature = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body.removeprefix("svt_") + "=="))
    claims["k"] = "one-session"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"svt_{forged}.{signature}"


# --- one speaking attempt per dialect: (what came back first, close code or HTTP status) -----------


async def _native(
    address: str, key: str | None, origin: str | None = None, voice: str | None = None
) -> tuple[Any, int]:
    url = f"ws://{address}/v1/stream?protocol=2" + (f"&token={key}" if key else "")
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        try:
            ws = await http.ws_connect(url, headers=headers)
        except aiohttp.WSServerHandshakeError as exc:
            return None, exc.status
        async with ws:
            first = json.loads((await ws.receive(timeout=30)).data)
            if first["type"] != "ready":
                await ws.receive(timeout=30)
                return first, ws.close_code
            return await speak_one_context(ws, "Hello there.", voice, timeout=30), 1000


async def _openai(address: str, key: str | None, voice: str = "alloy") -> tuple[Any, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "tts-1", "input": "Hello there.", "voice": voice, "response_format": "pcm"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{address}/v1/audio/speech", json=body, headers=headers) as r:
            data = await r.read()
            return (json.loads(data) if r.status != 200 else {"audio_bytes": len(data)}), r.status


async def _elevenlabs_ws(address: str, key: str | None, in_first_message: bool = False,
                         voice: str = VOICE) -> tuple[Any, int]:  # fmt: skip
    headers = {"xi-api-key": key} if key and not in_first_message else {}
    url = f"ws://{address}/v1/text-to-speech/{voice}/stream-input?output_format=pcm_22050"
    first: dict[str, Any] = {"text": " "}
    if in_first_message:
        first["xi_api_key"] = key
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=headers) as ws:
        await ws.send_json(first)
        await ws.send_json({"text": "Hello there. "})
        await ws.send_json({"text": ""})
        audio = 0
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return {"audio_bytes": audio}, ws.close_code
            event = json.loads(msg.data)
            if "error" in event:
                await ws.receive(timeout=30)
                return event, ws.close_code
            if event.get("audio"):
                audio += len(base64.b64decode(event["audio"]))
            if event.get("isFinal"):
                return {"audio_bytes": audio}, 1000


async def _elevenlabs_http(address: str, key: str | None) -> tuple[Any, int]:
    headers = {"xi-api-key": key} if key else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://{address}/v1/text-to-speech/{VOICE}/stream?output_format=pcm_22050",
                             json={"text": "Hello there."}, headers=headers) as r:  # fmt: skip
            data = await r.read()
            return (json.loads(data) if r.status != 200 else {"audio_bytes": len(data)}), r.status


async def _cartesia(address: str, key: str | None) -> tuple[Any, int]:
    headers = {"X-API-Key": key} if key else {}
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{address}/tts/websocket", headers=headers) as ws:
        fmt = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 22050}
        await ws.send_json({"model_id": "sonic-3", "transcript": "Hello there.", "context_id": "c1",
                            "voice": {"mode": "id", "id": VOICE}, "output_format": fmt})  # fmt: skip
        audio = 0
        while True:
            msg = await ws.receive(timeout=30)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return {"audio_bytes": audio}, ws.close_code
            event = json.loads(msg.data)
            if event["type"] == "error":
                await ws.receive(timeout=30)
                return event, ws.close_code
            if event["type"] == "chunk":
                audio += len(base64.b64decode(event["data"]))
            if event["type"] == "done":
                return {"audio_bytes": audio}, 1000


async def _get(address: str, path: str, key: str | None) -> tuple[Any, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}{path}", headers=headers) as r:
        body = await r.read()
        return (json.loads(body) if r.content_type == "application/json" else body), r.status


ATTEMPTS = {
    "native": (_native, 4401),
    "openai": (_openai, 401),
    "elevenlabs_ws": (_elevenlabs_ws, 1008),
    "elevenlabs_http": (_elevenlabs_http, 401),
    "cartesia": (_cartesia, 1008),
}


@pytest.mark.parametrize("route", list(ATTEMPTS))
async def test_every_dialect_refuses_bad_credentials_and_speaks_with_good_ones(
    auth_server: tuple[str, Keys], route: str
) -> None:
    address, keys = auth_server
    attempt, refused = ATTEMPTS[route]
    token = await _token(address, keys.full)
    bad = {"no key": None, "wrong key": keys.full[:-4] + "AAAA", "revoked key": keys.revoked,
           "expired token": _expired_token(), "tampered token": _tampered(token),
           "made-up key": "sv_000000000000_nothing"}  # fmt: skip
    for why, credential in bad.items():
        body, code = await attempt(address, credential)
        assert code == refused, (why, body, code)
        assert "audio_bytes" not in body, why
    for credential in (keys.full, token):
        body, code = await attempt(address, credential)
        assert code in (200, 1000), (body, code)
        assert body["audio_bytes"] > 1000


async def test_refusals_speak_each_dialects_error_shape(auth_server: tuple[str, Keys]) -> None:
    address, _ = auth_server
    body, _ = await _native(address, None)
    assert body == {"type": "error", "code": "unauthorized", "message": body["message"], "fatal": True}
    body, _ = await _openai(address, None)
    assert body["error"]["code"] == "invalid_api_key" and body["error"]["type"] == "invalid_request_error"
    body, _ = await _elevenlabs_ws(address, "sv_bad_bad")
    assert body["error"] == "invalid_api_key" and body["code"] == 1008
    body, _ = await _elevenlabs_http(address, None)
    assert body["detail"]["status"] == "invalid_api_key"
    body, _ = await _cartesia(address, None)
    assert body["type"] == "error" and body["status_code"] == 401


async def test_elevenlabs_takes_the_key_from_the_first_message(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    body, code = await _elevenlabs_ws(address, keys.full, in_first_message=True)
    assert code == 1000 and body["audio_bytes"] > 1000
    body, code = await _elevenlabs_ws(address, keys.revoked, in_first_message=True)
    assert code == 1008 and body["error"] == "invalid_api_key"


@pytest.mark.parametrize("path", ["/v1/voices", "/metrics", "/elevenlabs/v1/voices"])
async def test_listing_routes_need_a_key_and_health_does_not(auth_server: tuple[str, Keys], path: str) -> None:
    address, keys = auth_server
    assert (await _get(address, path, None))[1] == 401
    assert (await _get(address, path, keys.revoked))[1] == 401
    assert (await _get(address, path, keys.full))[1] == 200
    assert (await _get(address, "/healthz", None))[1] == 200


async def test_an_upgrade_header_does_not_get_an_http_route_past_the_check(auth_server: tuple[str, Keys]) -> None:
    address, _ = auth_server
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade"}
    async with aiohttp.ClientSession() as http:
        for method, path in [("GET", "/metrics"), ("GET", "/v1/voices"), ("POST", "/v1/tokens"),
                             ("POST", "/v1/audio/speech"), ("GET", "/elevenlabs/v1/voices")]:  # fmt: skip
            async with http.request(method, f"http://{address}{path}", headers=upgrade, json={}) as r:
                assert r.status == 401, (path, r.status, await r.text())


async def test_a_token_is_scoped_to_its_voices_and_dialects(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    native_only = await _token(address, keys.full, dialects=["native"])
    assert (await _native(address, native_only))[1] == 1000
    body, status = await _openai(address, native_only)
    assert status == 403 and body["error"]["type"] == "permission_error"
    other_voice = await _token(address, keys.full, voices=["some-other-voice"])
    body, code = await _native(address, other_voice, voice=VOICE)
    assert code == 4403 and body["code"] == "forbidden"
    body, status = await _openai(address, other_voice, voice=VOICE)
    assert status == 403 and body["error"]["type"] == "permission_error"
    voices, _ = await _get(address, "/v1/voices", other_voice)
    assert voices == {"voices": []}
    # a key limited to other voices hears the same
    body, code = await _elevenlabs_ws(address, keys.elsewhere)
    assert code == 1008 and body["error"] == "missing_permissions"


async def test_token_requests_are_checked(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    token = await _token(address, keys.full)
    async with aiohttp.ClientSession() as http:
        for headers, body, status in [
            ({}, {}, 401),
            ({"Authorization": f"Bearer {token}"}, {}, 403),  # a token cannot mint tokens
            ({"Authorization": f"Bearer {keys.full}"}, {"ttl_s": 7200}, 400),
            ({"Authorization": f"Bearer {keys.full}"}, {"dialects": ["telnet"]}, 400),
            ({"Authorization": f"Bearer {keys.elsewhere}"}, {"voices": [VOICE]}, 403),
        ]:
            async with http.post(f"http://{address}/v1/tokens", json=body, headers=headers) as r:
                assert r.status == status, (headers, body, await r.text())


async def test_a_disallowed_origin_is_refused_before_the_upgrade(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    assert (await _native(address, keys.full, origin="https://evil.example"))[1] == 403
    assert (await _native(address, keys.full, origin="http://localhost:3000"))[1] == 403  # loopback: only anonymous
    assert (await _native(address, keys.full, origin="https://app.example"))[1] == 1000
    assert (await _native(address, keys.full, origin=f"http://{address}"))[1] == 1000  # same origin
    socket_paths = [f"/v1/text-to-speech/{VOICE}/stream-input", f"/v1/text-to-speech/{VOICE}/multi-stream-input",
                    f"/elevenlabs/v1/text-to-speech/{VOICE}/stream-input", "/tts/websocket"]  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for path in socket_paths:
            headers = {"Origin": "https://evil.example", "xi-api-key": keys.full, "X-API-Key": keys.full}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"ws://{address}{path}", headers=headers)
            assert refused.value.status == 403, path


async def test_a_revoked_key_stops_working_without_a_restart(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    token = await _token(address, keys.full)
    assert (await _openai(address, keys.full))[1] == 200
    contents = KeysFile.read(keys.path)
    contents.revoke("full")
    contents.write(keys.path)
    await asyncio.sleep(1.1)  # the file is looked at once a second
    assert (await _openai(address, keys.full))[1] == 401
    assert (await _native(address, token))[1] == 4401  # its tokens die with it


async def test_per_key_session_and_character_limits(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    async with aiohttp.ClientSession() as http:
        url = f"ws://{address}/v1/stream?protocol=2&token={keys.one_session}"
        async with http.ws_connect(url) as first:
            assert json.loads((await first.receive()).data)["type"] == "ready"
            body, code = await _native(address, keys.one_session)
            assert code == 4429 and body["code"] == "rate_limited"
            body, status = await _openai(address, keys.one_session)
            assert status == 429 and body["error"]["type"] == "rate_limit_error"
            body, code = await _cartesia(address, keys.one_session)
            assert code == 1008 and body["status_code"] == 429
            # the open session still works
            await first.send_json({"type": "text", "text": "Still here.", "context_id": "a"})
            await first.send_json({"type": "end", "context_id": "a"})
            while (msg := await first.receive(timeout=30)).type == aiohttp.WSMsgType.BINARY or (
                json.loads(msg.data)["type"] != "done"
            ):
                pass
        await asyncio.sleep(0.2)
        assert (await _native(address, keys.one_session))[1] == 1000  # its place was given back

        url = f"ws://{address}/v1/stream?protocol=2&token={keys.few_chars}"
        async with http.ws_connect(url) as ws:
            assert json.loads((await ws.receive()).data)["type"] == "ready"
            await ws.send_json({"type": "text", "text": "Thirty characters of text ok. ", "context_id": "a"})
            await ws.send_json({"type": "text", "text": "And this pushes it past forty.", "context_id": "a"})
            await ws.send_json({"type": "end", "context_id": "a"})
            events = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))
                    if events[-1]["type"] == "done":
                        break
            errors = [e for e in events if e["type"] == "error"]
            assert [e["code"] for e in errors] == ["rate_limited"] and not errors[0]["fatal"]
            assert events[-1]["seconds"] > 0.5  # the accepted text was spoken
        body, status = await _openai(address, keys.few_chars)
        assert status == 429


async def test_wyoming_serves_loopback_peers_when_keys_are_on(auth_server: tuple[str, Keys]) -> None:
    address, keys = auth_server
    async with AsyncTcpClient("127.0.0.1", keys.wyoming_port) as client:
        await client.write_event(Event("synthesize", {"text": "Hello there."}))
        kinds = []
        while (event := await asyncio.wait_for(client.read_event(), 30)) is not None:
            kinds.append(event.type)
            if event.type == "audio-stop":
                break
    assert kinds[0] == "audio-start" and "audio-chunk" in kinds

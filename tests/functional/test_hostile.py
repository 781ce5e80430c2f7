"""The hostile-client suite: a real server process under attack while a seeded canary speaks.

Attacks: property-based messages (hypothesis) for the native, ElevenLabs and Cartesia sockets,
the OpenAI and ElevenLabs HTTP bodies and Wyoming events,
binary garbage, oversize and deeply nested JSON, lone surrogates, out-of-order messages, raw
garbage and invalid UTF-8 on the Wyoming port, 500 sockets that vanish mid-stream, and a flood
past the session limit.  Afterwards: the canary's bytes equal its solo run, the server logged no
traceback, and sessions, engine streams, threads and file descriptors are back where they
started, with RSS within ``RSS_BOUND_MB`` of its start (the engine trims when idle).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamvox.bench.harness import free_port, wait_healthy

pytestmark = pytest.mark.hostile

RSS_BOUND_MB = 150.0
"""RSS after the attacks (and the engine's idle trim) may exceed the start by this much."""
CANARY_TEXT = "The canary sings the same song, word for word, whatever happens around it."
MAX_SESSIONS = 40
VANISHING = 500


class Server:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.wyoming_port = free_port()
        self.log_path = tmp_path / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamvox.stream_server.cli", "--log-level", "INFO", "serve", "--port",
             str(self.port), "--seed", "11", "--max-sessions", str(MAX_SESSIONS), "--wyoming-port",
             str(self.wyoming_port), "--max-lead", "0"],
            stdout=subprocess.DEVNULL, stderr=self._log,
        )  # fmt: skip
        wait_healthy(self.proc, self.port)
        self.url = f"ws://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=10) as r:
            return json.loads(r.read())

    def engine_streams(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        return float(re.search(r"^streamvox_engine_streams (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

    def resources(self) -> dict[str, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        field = {k: v.split()[0] for k, v in (line.split(":", 1) for line in status.splitlines()) if v.split()}
        return {"fds": len(os.listdir(f"/proc/{self.proc.pid}/fd")), "threads": int(field["Threads"]),
                "rss_mb": int(field["VmRSS"]) / 1024}  # fmt: skip

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = Server(tmp_path_factory.mktemp("hostile"))
    yield srv
    srv.stop()


async def _canary(url: str) -> bytes:
    async with websockets.connect(f"{url}/v1/stream?protocol=2", max_size=None) as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(json.dumps({"type": "configure", "format": {"codec": "pcm_s16le"}}))
        await ws.send(json.dumps({"type": "text", "text": CANARY_TEXT, "context_id": "c"}))
        await ws.send(json.dumps({"type": "end", "context_id": "c"}))
        audio = bytearray()
        while True:
            message = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(message, bytes):
                audio += message[1:]  # protocol 2: the first byte is the channel
            elif json.loads(message)["type"] in ("done", "error"):
                assert json.loads(message)["type"] == "done", message
                return bytes(audio)


# --- property-based messages ---------------------------------------------------------------------

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
                      st.text(max_size=40), st.sampled_from(["\ud800", "\udfff", "a\x00b", "𝄞", " " * 3]))  # fmt: skip
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12), inner, max_size=4), max_leaves=12)  # fmt: skip
NATIVE_TYPES = ["configure", "text", "flush", "end", "cancel", "report", "keepalive", "bogus", None]
NATIVE_FIELDS = ["text", "context_id", "voice", "format", "timestamps", "played_ms", "speed", "seed"]


def _message(kind_field: str, kinds: list[Any], fields: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda kind, extra: ({kind_field: kind} if kind is not None else {}) | extra,
        st.sampled_from(kinds),
        st.dictionaries(st.sampled_from(fields), JSON_VALUE, max_size=4),
    )


NATIVE_MESSAGE = _message("type", NATIVE_TYPES, NATIVE_FIELDS)
ELEVENLABS_FIELDS = ["context_id", "flush", "close_context", "close_socket", "voice_settings", "generation_config",
                     "try_trigger_generation"]  # fmt: skip
ELEVENLABS_MESSAGE = _message("text", [" ", "Hello. ", "", None, 5], ELEVENLABS_FIELDS)
CARTESIA_MESSAGE = _message("transcript", ["Hi. ", "", None, 3], ["context_id", "continue", "cancel", "voice",
                            "output_format", "add_timestamps", "model_id", "flush"])  # fmt: skip


def _exchange(url: str, frames: list[str | bytes], expect_ready: bool) -> None:
    """Send ``frames`` and read what comes back for a moment; the server must answer in JSON
    text or audio, never hang up without a close code."""
    from websockets.sync.client import connect

    with connect(url, max_size=None, open_timeout=30) as ws:
        if expect_ready:
            assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        for frame in frames:
            try:
                ws.send(frame)
            except websockets.ConnectionClosed:
                break
        deadline = time.monotonic() + 0.3
        try:
            while time.monotonic() < deadline:
                reply = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                if isinstance(reply, str):
                    json.loads(reply)  # every text reply is JSON
        except TimeoutError:
            pass
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None, "the server dropped the socket without a close frame"


def _as_frames(messages: list[Any]) -> list[str]:
    return [json.dumps(m) for m in messages]


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _fuzz_native(server: Server) -> None:
    @FUZZ
    @given(st.lists(NATIVE_MESSAGE, min_size=1, max_size=6))
    def run(messages: list[dict[str, Any]]) -> None:
        _exchange(f"{server.url}/v1/stream?protocol=2", _as_frames(messages), expect_ready=True)

    run()


def _fuzz_elevenlabs(server: Server) -> None:
    @FUZZ
    @given(st.lists(ELEVENLABS_MESSAGE, min_size=1, max_size=5), st.booleans())
    def run(messages: list[dict[str, Any]], multi: bool) -> None:
        path = "multi-stream-input" if multi else "stream-input"
        _exchange(f"{server.url}/v1/text-to-speech/en_US-joe-medium/{path}", _as_frames(messages), False)

    run()


def _fuzz_cartesia(server: Server) -> None:
    @FUZZ
    @given(st.lists(CARTESIA_MESSAGE, min_size=1, max_size=5))
    def run(messages: list[dict[str, Any]]) -> None:
        _exchange(f"{server.url}/tts/websocket", _as_frames(messages), False)

    run()


OPENAI_BODY = _message("input", ["Hi.", "", None, 3, "\ud800"], ["model", "voice", "response_format", "speed",
                        "stream_format", "instructions"])  # fmt: skip
ELEVENLABS_BODY = _message("text", ["Hi.", "", None, ["x"]], ["voice_settings", "model_id", "seed"])
WYOMING_TYPES = ["describe", "synthesize", "synthesize-start", "synthesize-chunk", "synthesize-stop", "audio-chunk",
                 "ping", "bogus"]  # fmt: skip
WYOMING_DATA = st.dictionaries(st.sampled_from(["text", "voice", "name", "rate"]), JSON_VALUE, max_size=3)
WYOMING_EVENT = st.builds(lambda kind, data: {"type": kind, "data": data}, st.sampled_from(WYOMING_TYPES), WYOMING_DATA)


def _fuzz_http(server: Server) -> None:
    """Random bodies for the two HTTP speech routes: never a server error, JSON errors parse."""

    def post(path: str, body: bytes) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            assert exc.code < 500, (path, body[:200], exc.code)
            json.loads(exc.read())

    @FUZZ
    @given(st.one_of(OPENAI_BODY.map(lambda b: json.dumps(b).encode()), st.binary(max_size=200)), ELEVENLABS_BODY)
    def run(openai_body: bytes, elevenlabs_body: dict[str, Any]) -> None:
        post("/v1/audio/speech", openai_body)
        post("/v1/text-to-speech/en_US-joe-medium/stream?output_format=pcm_16000", json.dumps(elevenlabs_body).encode())

    run()


def _fuzz_wyoming(server: Server) -> None:
    @FUZZ
    @given(st.lists(WYOMING_EVENT, min_size=1, max_size=4))
    def run(events: list[dict[str, Any]]) -> None:
        with socket.create_connection(("127.0.0.1", server.wyoming_port), timeout=10) as sock:
            sock.sendall(b"".join(json.dumps(e).encode() + b"\n" for e in events))
            sock.settimeout(0.3)
            try:
                while sock.recv(65536):
                    pass
            except TimeoutError:
                pass

    run()


def _malformed(server: Server) -> None:
    native = f"{server.url}/v1/stream?protocol=2"
    nested = "[" * 20_000 + "]" * 20_000
    cases: list[list[str | bytes]] = [
        [os.urandom(512)],
        ["not json at all {"],
        [nested],
        ['{"type": "text", "text": "\\ud800 lone", "context_id": "a"}'],
        ['{"type": "end", "context_id": "never-opened"}', '{"type": "cancel"}', '{"type": "report", "played_ms": -1}'],
        ['{"type": "text", "text": "' + "x" * 70_000 + '"}'],
        [b"\xff\xfe" * 100],
    ]
    for frames in cases:
        _exchange(native, frames, expect_ready=True)
    _exchange(f"{server.url}/v1/text-to-speech/en_US-joe-medium/stream-input", [nested, os.urandom(64)], False)
    _exchange(f"{server.url}/tts/websocket", ['{"transcript": "\\udc00", "context_id": "x"}', nested], False)
    _oversize(native)
    wyoming_garbage = (b"\xff\xfe not utf-8\n", b'{"type": "synthesize", "data": {"text": 5}}\n',
                       os.urandom(300) + b"\n", b'{"type": "synthesize-chunk", "data": {"text": "out of order"}}\n',
                       b'{"type": "synthesize", "data": {"voice": 7}}\n', b"[1, 2]\n",
                       b'{"type": "synthesize", "data_length": "ten"}\n',
                       b'{"type": "synthesize", "data_length": 1000}\n{"text"')  # cut short  # fmt: skip
    for garbage in wyoming_garbage:
        with socket.create_connection(("127.0.0.1", server.wyoming_port), timeout=10) as sock:
            sock.sendall(garbage)
            sock.settimeout(1.0)
            try:
                sock.recv(4096)
            except TimeoutError:
                pass


def _oversize(url: str) -> None:
    """A frame past the hard limit: the server closes with 1009 without reading it, so the kernel
    may reset the sender before its close frame is read; either way nothing else breaks."""
    from websockets.sync.client import connect

    with connect(url, max_size=None, open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "ready"
        try:
            ws.send("x" * (2 * 1024 * 1024))
            ws.recv(timeout=10)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is None or closed.rcvd.code == 1009, closed
        except ConnectionResetError:
            pass


async def _vanishing(url: str, count: int) -> None:
    """Sockets that open, start speaking and disappear without a close (some past the session limit)."""
    rng = random.Random(5)

    async def one(i: int) -> None:
        try:
            ws = await websockets.connect(f"{url}/v1/stream?protocol=2", max_size=None, open_timeout=60)
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            return
        try:
            await asyncio.wait_for(ws.recv(), 30)
            await ws.send(json.dumps({"type": "text", "text": "Vanishing soon, mid sentence. " * 3, "context_id": "v"}))
            await ws.send(json.dumps({"type": "end", "context_id": "v"}))
            if rng.random() < 0.5:
                await asyncio.wait_for(ws.recv(), 30)
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        finally:
            ws.transport.abort()

    for start in range(0, count, 100):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + 100))))


def test_hostile_clients_change_nothing_for_the_canary(server: Server) -> None:
    solo = asyncio.run(_canary(server.url))
    assert len(solo) > 100_000
    time.sleep(3)  # let the idle trim settle the baseline
    before = server.resources()
    canary: dict[str, bytes] = {}

    async def canaries() -> None:
        for i in range(3):
            canary[str(i)] = await _canary(server.url)

    thread = threading.Thread(target=lambda: asyncio.run(canaries()))
    thread.start()
    started = time.monotonic()
    _malformed(server)
    _fuzz_native(server)
    _fuzz_elevenlabs(server)
    _fuzz_cartesia(server)
    _fuzz_http(server)
    _fuzz_wyoming(server)
    asyncio.run(_vanishing(server.url, VANISHING))
    thread.join(300)
    attack_s = time.monotonic() - started
    assert set(canary) == {"0", "1", "2"}
    for audio in canary.values():
        assert audio == solo  # identical bytes, whatever the neighbours did

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = server.health()
        if health["sessions"] == 0 and server.engine_streams() == 0:
            break
        time.sleep(0.2)
    assert health["status"] == "ok" and health["sessions"] == 0 and server.engine_streams() == 0
    time.sleep(3)  # the engine's idle trim
    after = server.resources()
    print(f"\nhostile run {attack_s:.0f} s; resources before {before}, after {after}")
    assert after["fds"] <= before["fds"] + 2
    assert after["threads"] <= before["threads"] + 2  # the pool may have started its spare workers
    assert after["rss_mb"] <= before["rss_mb"] + RSS_BOUND_MB

    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 : log.index("Traceback") + 3000]

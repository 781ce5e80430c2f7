"""The command line's side of auth: ``streamvox keys``, the safe default, and keys kept out of logs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import websockets
from streamvox.bench.harness import free_port, wait_healthy

STREAMVOX = [sys.executable, "-m", "streamvox.stream_server.cli"]


def test_a_public_bind_needs_keys_or_an_explicit_anonymous_flag(tmp_path: Path) -> None:
    result = subprocess.run([*STREAMVOX, "serve", "--host", "0.0.0.0", "--port", "0"], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--allow-anonymous" in lines[0] and "--keys" in lines[0]
    wyoming = subprocess.run([*STREAMVOX, "serve", "--wyoming-port", "0", "--wyoming-host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wyoming.returncode == 2 and "carries no key" in wyoming.stderr


def test_a_voice_that_fails_to_load_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    (tmp_path / "broken.onnx.json").write_text("{}")
    result = subprocess.run([*STREAMVOX, "serve", "--voice", str(tmp_path / "broken.onnx")], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "broken.onnx" in result.stderr, result.stderr


def test_keys_never_reach_the_log(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    added = subprocess.run([*STREAMVOX, "keys", "add", "app", "--keys", str(keys_file), "--sessions", "4"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    key = added.stdout.strip()
    assert key.startswith("sv_") and key not in added.stderr and key not in keys_file.read_text()
    listed = subprocess.run([*STREAMVOX, "keys", "list", "--keys", str(keys_file)], capture_output=True, text=True)
    assert "app\tlive" in listed.stdout and key not in listed.stdout
    env_key = "env-secret-0123456789"
    port = free_port()
    env = {**os.environ, "STREAMVOX_API_KEYS": f"ci={env_key}"}
    proc = subprocess.Popen([*STREAMVOX, "--log-level", "DEBUG", "serve", "--port", str(port), "--keys",
                             str(keys_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    try:
        wait_healthy(proc, port)

        def post(path: str, credential: str, body: dict[str, object]) -> tuple[int, bytes]:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                             headers={"Authorization": f"Bearer {credential}"})  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        status, body = post("/v1/tokens", key, {})
        assert status == 200
        token = json.loads(body)["token"]
        assert (
            post(
                "/v1/audio/speech",
                env_key,
                {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm"},
            )[0]
            == 200
        )
        assert post("/v1/audio/speech", key + "x", {"model": "tts-1", "input": "Hi.", "voice": "alloy"})[0] == 401

        async def speak(credential: str) -> None:
            url = f"ws://127.0.0.1:{port}/v1/stream?protocol=2&token={credential}"
            async with websockets.connect(url) as ws:
                assert json.loads(await ws.recv())["type"] == "ready"

        asyncio.run(speak(token))
        asyncio.run(speak(key))
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    log = stderr.decode()
    assert "GET /v1/stream?protocol=2&token=REDACTED" in log  # the access log ran, and redacted
    for secret in (key, key.split("_", 2)[2], env_key, token, token.partition(".")[2]):
        assert secret not in log

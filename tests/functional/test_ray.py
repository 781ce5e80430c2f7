"""streamvox on Ray Serve: a local Ray instance (4 logical CPUs, no dashboard) serving two replicas
of the bundled voice, each its own engine (``deploy/ray_app.py``).  Bounded in time: one start for
the module, every session seeded."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from streamvox.bench.harness import free_port

from tests.helpers.ws import collect_until, recv_json, send, speak_whole

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "serve_config.yaml"
TEXT = "Good morning! The weather today is sunny with a light breeze from the west."


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    import ray
    from ray import serve
    from streamvox.deploy.ray_app import app_builder

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        application = yaml.safe_load(SERVE_CONFIG.read_text())["applications"][0]
        args = {**application["args"], "max_sessions": 6}  # the shipped config, with a small limit
        serve.run(app_builder(args), route_prefix=application["route_prefix"])
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    if json.loads(response.read())["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
        serve.shutdown()
    finally:
        ray.shutdown()


async def replica_of_a_session(address: str, text: str, seed: int) -> tuple[str, bytes]:
    async with websockets.connect(f"ws://{address}/v1/stream", max_size=None) as ws:
        replica = ws.response.headers["x-streamvox-replica"]
        await recv_json(ws)
        await send(ws, type="configure", seed=seed, format="pcm_s16le")
        await recv_json(ws)
        await send(ws, type="text", text=text)
        await send(ws, type="end")
        exchange = await collect_until(ws, timeout=120)
    return replica, b"".join(exchange.audio)


async def test_a_seeded_session_gives_the_standalone_servers_bytes(ray_address: str, server: str) -> None:
    settings = {"format": "opus", "seed": 21}
    standalone = await speak_whole(server, TEXT, settings)
    through_ray = await speak_whole(f"ws://{ray_address}/v1/stream", TEXT, settings)
    assert len(through_ray.audio) > 10 and through_ray.audio == standalone.audio


async def test_three_utterances_of_a_session_stay_on_its_replica(ray_address: str) -> None:
    """A socket is one request pinned to the replica that accepted it: every context on it is
    generated there (its ``ready`` and ``done`` events come back on the same connection)."""
    async with websockets.connect(f"ws://{ray_address}/v1/stream?protocol=2", max_size=None) as ws:
        replica = ws.response.headers["x-streamvox-replica"]
        await recv_json(ws)
        for n in range(3):
            await send(ws, type="text", text=f"Utterance number {n + 1}.", context_id=f"c{n}")
            await send(ws, type="end", context_id=f"c{n}")
            done = await collect_until(ws, timeout=120)
            assert done.of_type("done") and done.audio
    assert replica


async def test_eight_sessions_at_once_spread_over_both_replicas(ray_address: str) -> None:
    results = await asyncio.gather(*(replica_of_a_session(ray_address, "A short reply.", 5) for _ in range(8)))
    placement = Counter(replica for replica, _ in results)
    print(f"8 sessions at once: {sorted(placement.values(), reverse=True)} per replica")
    assert sorted(placement.values()) == [4, 4], placement  # deploy/router.py: fewest sessions first
    assert len({audio for _, audio in results}) == 1  # same seed, same bytes, whichever replica


async def test_a_full_cluster_refuses_with_overloaded_and_1013(ray_address: str) -> None:
    """Two replicas of 6 sessions each: a 13th concurrent session is refused the protocol's way."""
    sockets: list[Any] = []
    try:
        for _ in range(12):
            ws = await websockets.connect(f"ws://{ray_address}/v1/stream", max_size=None)
            sockets.append(ws)
            assert (await recv_json(ws))["type"] == "ready"
        async with websockets.connect(f"ws://{ray_address}/v1/stream") as extra:
            refusal = await recv_json(extra)
            assert refusal["type"] == "error" and refusal["code"] == "overloaded"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await extra.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))


def test_serve_ray_refuses_what_it_does_not_serve_in_one_line() -> None:
    command = [sys.executable, "-m", "streamvox.stream_server.cli", "serve", "--ray", "--wyoming-port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ray serves the native protocol" in lines[0]


def test_the_serve_config_is_valid_and_its_args_are_checked() -> None:
    from ray.serve.schema import ServeDeploySchema
    from streamvox.deploy.ray_app import app_builder

    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert schema.applications[0].import_path == "streamvox.deploy.ray_app:app_builder"
    with pytest.raises(ValueError, match="unknown args"):
        app_builder({"replica": 2})
    with pytest.raises(ValueError, match="without API keys"):
        app_builder({"replicas": 1})

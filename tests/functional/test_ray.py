"""streamvox on Ray Serve: a local Ray instance (4 logical CPUs, no dashboard) serving two replicas
of the bundled voice, each its own engine (``deploy/ray_app.py``).  Bounded in time: one start for
the module, every session seeded."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
import yaml
from streamvox.bench.harness import free_port

from tests.helpers.dialect_ws import cartesia_pcm, elevenlabs_multi_pcm, openai_pcm
from tests.helpers.ws import collect_until, recv_json, send, speak_whole

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SERVE_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "serve_config.yaml"
KUBERAY = SERVE_CONFIG.parent / "kuberay" / "rayservice.yaml"
TEXT = "Good morning! The weather today is sunny with a light breeze from the west."


LONG_TEXT = " ".join(
    ["The committee met on Tuesday to review the budget for the coming year, and after a long debate"
     " it agreed to fund the new library, repair the old bridge, and plant trees along the river."] * 3
)  # fmt: skip
APP = DEPLOYMENT = "streamvox"


@dataclass
class RayServe:
    """The local Ray Serve instance: its address, the Serve config it was deployed with, and how
    to change it (as ``serve deploy`` does, without the dashboard)."""

    address: str
    config: dict[str, Any]
    client: Any

    def deploy(self, config: dict[str, Any]) -> None:
        from ray.serve.schema import ServeDeploySchema

        self.client.deploy_apps(ServeDeploySchema.model_validate(config))

    def replicas(self) -> list[dict[str, Any]]:
        import ray
        from streamvox.deploy.stop_watch import CONTROLLER_NAME, SERVE_NAMESPACE, replicas_of

        controller = ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        return replicas_of(ray.get(controller.get_serve_instance_details.remote()), APP, DEPLOYMENT)


@pytest.fixture(scope="module")
def ray_serve() -> Iterator[RayServe]:
    """The shipped Serve config (deploy/serve_config.yaml) deployed as ``serve deploy`` would, with
    a small session limit, a short drain window and the dialect tests' seed."""
    import ray
    from ray import serve
    from ray.serve.context import _get_global_client

    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = yaml.safe_load(SERVE_CONFIG.read_text())
        config["http_options"] = {"host": "127.0.0.1", "port": port}
        config["applications"][0]["args"].update(max_sessions=6, drain_timeout_s=3, seed=7)
        served = RayServe(f"127.0.0.1:{port}", config, _get_global_client())
        served.deploy(config)
        deadline = time.monotonic() + 120
        while sum(r["state"] == "RUNNING" for r in served.replicas()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{served.address}/healthz", timeout=5) as response:
                    if json.loads(response.read())["status"] == "ok":
                        break
            except OSError:
                time.sleep(0.2)
        yield served
        serve.shutdown()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_address(ray_serve: RayServe) -> str:
    return ray_serve.address


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


async def test_the_dialect_sockets_give_the_standalone_servers_bytes(
    ray_address: str, dialect_server: tuple[str, Any]
) -> None:
    """ElevenLabs' multi-stream socket (Pipecat's messages), Cartesia's socket and OpenAI's speech
    (the real ``openai`` package), with the seed both servers default to: the same PCM through
    Ray as from one aiohttp server."""
    standalone = dialect_server[0].replace("http://", "ws://")
    voice = "en_US-joe-medium"
    through_ray = await elevenlabs_multi_pcm(f"ws://{ray_address}", voice, TEXT)
    assert len(through_ray) > 22050 and through_ray == await elevenlabs_multi_pcm(standalone, voice, TEXT)
    through_ray = await cartesia_pcm(f"ws://{ray_address}", voice, TEXT)
    assert len(through_ray) > 24000 and through_ray == await cartesia_pcm(standalone, voice, TEXT)
    through_ray = await openai_pcm(f"http://{ray_address}", TEXT)
    assert len(through_ray) > 24000 and through_ray == await openai_pcm(dialect_server[0], TEXT)


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


async def test_metrics_of_every_replica_in_one_scrape(ray_serve: RayServe) -> None:
    """``GET /metrics`` through Ray, whichever replica answers: one series per replica, labelled."""
    from prometheus_client.parser import text_string_to_metric_families

    for ws in await _one_socket_per_replica(ray_serve.address):
        await recv_json(ws)
        await send(ws, type="text", text="Count me.")
        await send(ws, type="end")
        assert (await collect_until(ws, timeout=60)).audio
        await ws.close()
    running = {r["replica_id"] for r in ray_serve.replicas() if r["state"] == "RUNNING"}
    deadline = time.monotonic() + 20  # each replica posts every 5 s: a scrape may be that stale
    while True:
        with urllib.request.urlopen(f"http://{ray_serve.address}/metrics", timeout=10) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        sessions = {s.labels.get("replica") for s in families["streamvox_sessions"].samples}
        contexts = {s.labels.get("replica") for s in families["streamvox_contexts"].samples}
        if (sessions == contexts == running) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert len(running) == 2 and sessions == running and contexts == running


async def _read_to_close(ws: Any, received: list[str | bytes]) -> int:
    try:
        while True:
            received.append(await ws.recv())
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006


def _events(received: list[str | bytes]) -> list[dict[str, Any]]:
    return [json.loads(m) for m in received if isinstance(m, str)]


async def _one_socket_per_replica(address: str) -> list[Any]:
    """Open native sockets (held open, so the router sees them) until one is on each of the two
    replicas; the extra ones are closed.  (A burst spreads evenly, but a router's count of
    just-closed sessions can lag by a moment, so a test that needs both replicas asks for them.)"""
    held: dict[str, Any] = {}
    extra: list[Any] = []
    for _ in range(8):
        ws = await websockets.connect(f"ws://{address}/v1/stream?protocol=2", max_size=None)
        replica = ws.response.headers["x-streamvox-replica"]
        if replica in held:
            extra.append(ws)
        else:
            held[replica] = ws
        if len(held) == 2:
            break
    await asyncio.gather(*(ws.close() for ws in extra))
    assert len(held) == 2, "eight sockets in a row landed on one replica"
    return list(held.values())


async def _speaking_on_each_replica(address: str) -> tuple[list[Any], list[list[str | bytes]], list[asyncio.Task[int]]]:
    """Two sockets, one per replica, each speaking ``LONG_TEXT`` (about 25 s, paced by the lead
    limit); returns once both have sent audio."""
    sockets = await _one_socket_per_replica(address)
    received: list[list[str | bytes]] = [[], []]
    for ws in sockets:
        await recv_json(ws)
        await send(ws, type="text", text=LONG_TEXT, context_id="long")
        await send(ws, type="end", context_id="long")
    readers = [asyncio.create_task(_read_to_close(ws, got)) for ws, got in zip(sockets, received, strict=True)]
    deadline = time.monotonic() + 30
    while not all(any(isinstance(m, bytes) for m in got) for got in received):
        assert time.monotonic() < deadline, [_events(got) for got in received]
        await asyncio.sleep(0.05)
    return sockets, received, readers


async def _survives(ws: Any, received: list[str | bytes], reader: asyncio.Task[int]) -> None:
    """The socket still streams; then the client cancels its context and leaves."""
    before = len(received)
    deadline = time.monotonic() + 10  # the lead limit releases a window at a time: packets come in bursts
    while len(received) == before and not reader.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not reader.done() and len(received) > before
    await send(ws, type="cancel", context_id="long")
    deadline = time.monotonic() + 10
    while not any(e["type"] == "cancelled" for e in _events(received)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert [e["reason"] for e in _events(received) if e["type"] == "cancelled"] == ["client"]
    await ws.close()
    assert await reader == 1000


async def test_a_killed_replica_closes_its_sockets_and_is_replaced(ray_serve: RayServe) -> None:
    """SIGKILL one replica while both speak: its client sees a close, the other keeps streaming,
    Ray starts a replacement, and new sessions are served."""
    sockets, received, readers = await _speaking_on_each_replica(ray_serve.address)
    victim_id = sockets[0].response.headers["x-streamvox-replica"]
    (victim,) = [r for r in ray_serve.replicas() if r["replica_id"] == victim_id]
    os.kill(victim["pid"], signal.SIGKILL)
    code = await asyncio.wait_for(readers[0], 30)
    print(f"a killed replica's client saw close code {code}")
    assert not any(e["type"] in ("done", "cancelled") for e in _events(received[0]))
    await _survives(sockets[1], received[1], readers[1])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = {r["replica_id"] for r in ray_serve.replicas() if r["state"] == "RUNNING"}
        if len(running) == 2 and victim_id not in running:
            break
        await asyncio.sleep(0.5)
    assert len(running) == 2 and victim_id not in running
    _, audio = await replica_of_a_session(ray_serve.address, "Back again.", 5)
    assert audio


async def test_scaling_down_drains_the_removed_replicas_sessions(ray_serve: RayServe) -> None:
    """Scale to one replica (a lightweight config update) while a context speaks on each: the
    removed replica's context ends ``cancelled``/``shutdown`` (or ``done``) within the drain
    window and its socket closes with 1001; the other socket is untouched; reconnecting works."""
    sockets, received, readers = await _speaking_on_each_replica(ray_serve.address)
    scaled = copy.deepcopy(ray_serve.config)
    scaled["applications"][0]["deployments"] = [{"name": DEPLOYMENT, "num_replicas": 1}]
    started = time.monotonic()
    ray_serve.deploy(scaled)
    finished, _ = await asyncio.wait(readers, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    assert len(finished) == 1, "no socket was closed by the scale-down"
    gone = readers.index(finished.pop())
    stay = 1 - gone
    took = time.monotonic() - started
    ends = [e for e in _events(received[gone]) if e["type"] in ("done", "cancelled")]
    print(f"scale-down: the removed replica's socket closed {readers[gone].result()} after {took:.1f} s; "
          f"its context ended {ends}")  # fmt: skip
    assert readers[gone].result() == 1001
    assert len(ends) == 1 and (ends[0]["type"] == "done" or ends[0]["reason"] == "shutdown")
    assert took < 3 + 5 + 2  # the drain window, Ray's margin, and a watcher period
    await _survives(sockets[stay], received[stay], readers[stay])
    survivor = sockets[stay].response.headers["x-streamvox-replica"]
    replica, audio = await replica_of_a_session(ray_serve.address, "Welcome back.", 5)
    assert audio and replica == survivor


def test_serve_ray_refuses_what_it_does_not_serve_in_one_line() -> None:
    command = [sys.executable, "-m", "streamvox.stream_server.cli", "serve", "--ray", "--wyoming-port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--ray serves the WebSocket dialects" in lines[0]


def test_the_serve_config_is_valid_and_its_args_are_checked() -> None:
    from ray.serve.schema import ServeDeploySchema
    from streamvox.deploy.ray_app import app_builder

    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    assert schema.applications[0].import_path == "streamvox.deploy.ray_app:app_builder"
    with pytest.raises(ValueError, match="unknown args"):
        app_builder({"replica": 2})
    with pytest.raises(ValueError, match="without API keys"):
        app_builder({"replicas": 1})


def test_the_kuberay_manifest_serves_the_app_behind_tls() -> None:
    """deploy/kuberay/rayservice.yaml: its Serve config is valid for Ray and for app_builder, its
    ports agree, the Ingress ends TLS and points at the service KubeRay makes, and the worker
    groups fit one replica per pod."""
    from ray.serve.schema import ServeDeploySchema
    from streamvox.deploy.ray_app import APP_ARGS, Placement

    documents = {d["kind"]: d for d in yaml.safe_load_all(KUBERAY.read_text())}
    service = documents["RayService"]
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(serve_config)
    application = serve_config["applications"][0]
    assert schema.applications[0].import_path == "streamvox.deploy.ray_app:app_builder"
    args = application["args"]
    assert set(args) <= set(APP_ARGS) and args["keys_file"] and not args.get("allow_anonymous")
    placement = Placement(args["replicas"], args["cpus_per_replica"], 0.0, args["max_replicas"],
                          args["target_sessions"])  # fmt: skip
    assert placement.target_sessions is not None and placement.target_sessions < args["max_sessions"]
    cluster = service["spec"]["rayClusterConfig"]
    workers = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    cpu_pod = workers["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert float(cpu_pod["cpu"]) == args["cpus_per_replica"]  # one replica per CPU pod
    assert workers["cpu"]["maxReplicas"] >= args["max_replicas"]
    assert workers["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replica on the head
    mounted = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
    assert args["keys_file"].startswith(mounted) and "keys.jsonl" in documents["Secret"]["stringData"]
    ingress = documents["Ingress"]["spec"]
    assert ingress["tls"][0]["secretName"] and ingress["tls"][0]["hosts"] == [ingress["rules"][0]["host"]]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == f"{service['metadata']['name']}-serve-svc"
    assert backend["port"]["number"] == serve_config["http_options"]["port"] == 8000

"""streamvox on Ray Serve: one engine per replica, behind Ray's proxy and router.

Each replica runs the ASGI app of ``stream_server/asgi.py`` (the same runtime
and session code as the aiohttp server) with its own voices and engine, built
on the replica by :func:`streamvox_app`'s builder.  A WebSocket is one long
request pinned to the replica that accepted it, so a session never moves and
Ray's autoscaler counts open sessions as ongoing requests; the router
(``router.py``) sends each new session to the replica with the fewest.  Each
replica admits up to ``ServerConfig.max_sessions`` itself; Ray may route a
few more to it (``HEADROOM``) so that a full replica, not Ray's proxy, refuses
them, with the protocol's ``overloaded`` error and close code 1013.

Needs the optional extra ``streamvox[ray]``.  ``streamvox serve --ray
--replicas N`` runs it on a local Ray instance (:func:`run_local`).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from ray import serve
from ray.serve.config import RequestRouterConfig
from streamvox.deploy.router import FewestSessionsRouter
from streamvox.stream_server.asgi import StreamvoxAsgi, create_asgi_app
from streamvox.stream_server.config import ServerConfig

HEADROOM = 4
"""Sessions Ray may send a replica past its own limit, which the replica refuses (1013)."""


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # built outside a replica (a local test of the builder)
        return f"pid-{os.getpid()}"


def streamvox_app(config: ServerConfig, replicas: int = 2, cpus_per_replica: float = 1.0) -> Any:
    """The Ray Serve application: ``replicas`` copies of the server for ``config`` (voices load on
    each replica), at most ``config.max_sessions`` sessions each, drained within
    ``config.drain_timeout_s`` when a replica is removed."""

    def build() -> StreamvoxAsgi:
        return create_asgi_app(config, replica=_replica_name())

    replica_class = serve.ingress(build)(type("StreamvoxReplica", (), {"__doc__": "One streamvox engine."}))
    deployment = serve.deployment(
        replica_class,
        name="streamvox",
        num_replicas=replicas,
        max_ongoing_requests=config.max_sessions + HEADROOM,
        graceful_shutdown_timeout_s=config.drain_timeout_s + 5.0,
        ray_actor_options={"num_cpus": cpus_per_replica},
        request_router_config=RequestRouterConfig(request_router_class=FewestSessionsRouter),
    )
    return deployment.bind()


APP_ARGS = {
    "replicas": "replicas (each its own engine; default 2)",
    "cpus_per_replica": "Ray CPUs each replica reserves (default 1)",
    "voices": 'extra voices as "KIND=PATH" (a list; the bundled voice is served too unless no_bundled_voice)',
    "no_bundled_voice": "do not serve the bundled voice (default false)",
    "max_sessions": "sessions each replica admits (default 64)",
    "drain_timeout_s": "the drain window (default 10)",
    "idle_timeout_s": "close sessions silent this long (default 300; 0 never)",
    "seed": "the seed of contexts whose client names none",
    "keys_file": "API keys (the same file on every replica)",
    "allow_anonymous": "serve without keys (default false: refused, as for a public bind)",
    "allow_origins": "browser origins allowed to open sockets (a list)",
}
"""What a Serve config's ``args`` may set for :func:`app_builder` (the rest is ``ServerConfig``'s default)."""


def app_builder(args: dict[str, Any]) -> Any:
    """The application a Serve config (``serve run deploy/serve_config.yaml``, or a KubeRay
    RayService's ``serveConfigV2``) names as ``streamvox.deploy.ray_app:app_builder``;
    ``args`` takes the keys of :data:`APP_ARGS`.  ``ValueError`` names an unknown or bad one."""
    from streamvox.engine.registry import VoiceSpec

    unknown = set(args) - set(APP_ARGS)
    if unknown:
        raise ValueError(f"unknown args {sorted(unknown)}; known: {', '.join(APP_ARGS)}")
    idle = float(args.get("idle_timeout_s", 300.0))
    config = ServerConfig(
        host="0.0.0.0",  # Ray's proxy listens beyond loopback: keys or an explicit allow_anonymous
        allow_anonymous=bool(args.get("allow_anonymous", False)),
        voices=tuple(VoiceSpec.parse(str(v)) for v in args.get("voices", ())),
        include_bundled_voice=not bool(args.get("no_bundled_voice", False)),
        max_sessions=int(args.get("max_sessions", 64)),
        drain_timeout_s=float(args.get("drain_timeout_s", 10.0)),
        idle_timeout_s=idle or None,
        default_seed=None if args.get("seed") is None else int(args["seed"]),
        keys_file=args.get("keys_file"),
        allow_origins=tuple(args.get("allow_origins", ())),
    )
    return streamvox_app(config, int(args.get("replicas", 2)), float(args.get("cpus_per_replica", 1.0)))


def run_local(config: ServerConfig, host: str, port: int, replicas: int, cpus_per_replica: float = 1.0) -> int:
    """Start a local Ray instance, serve ``replicas`` replicas on ``host:port`` until SIGINT or
    SIGTERM, then shut Serve and Ray down."""
    import ray

    ray.init(num_cpus=max(2, int(replicas * cpus_per_replica) + 1), include_dashboard=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(streamvox_app(config, replicas, cpus_per_replica), route_prefix="/")
        print(f"streamvox on Ray Serve: {replicas} replica(s) at http://{host}:{port}/", flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0

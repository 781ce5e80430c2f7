"""streamvox on Ray Serve: one engine per replica, behind Ray's proxy and router.

Each replica runs the ASGI app of ``stream_server/asgi.py`` (the same runtime
and session code as the aiohttp server) with its own voices and engine, built
on the replica by :func:`streamvox_app`'s builder.  A WebSocket is one long
request pinned to the replica that accepted it, so a session never moves and
Ray's autoscaler counts open sessions as ongoing requests; the router
(``router.py``) sends each new session to the replica with the fewest.  Each
replica admits up to ``ServerConfig.max_sessions`` itself; Ray may route a
few more to it (``HEADROOM``) so that a full replica, not Ray's proxy, refuses
them, with the protocol's ``overloaded`` error and close code 1013.  When Ray
removes a replica, ``stop_watch.py`` drains its sessions within the drain
window; ``metrics_board.py`` gathers every replica's metrics (labelled
``replica``) behind ``GET /metrics``.

Needs the optional extra ``streamvox[ray]``.  ``streamvox serve --ray
--replicas N`` runs it on a local Ray instance (:func:`run_local`).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, replace
from typing import Any

from ray import serve
from ray.serve.config import AutoscalingConfig, RequestRouterConfig
from streamvox.deploy.metrics_board import MetricsReporter
from streamvox.deploy.router import FewestSessionsRouter
from streamvox.deploy.stop_watch import watch_for_stop
from streamvox.stream_server.asgi import StreamvoxAsgi, create_asgi_app
from streamvox.stream_server.config import ServerConfig

HEADROOM = 4
"""Sessions Ray may send a replica past its own limit, which the replica refuses (1013)."""


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # built outside a replica (a local test of the builder)
        return f"pid-{os.getpid()}"


@dataclass(frozen=True)
class Placement:
    """How many replicas, and what each reserves.  With ``max_replicas`` set, Ray's autoscaler
    keeps between ``replicas`` and ``max_replicas``, aiming at ``target_sessions`` open sessions
    per replica (default: three quarters of the replica's session limit)."""

    replicas: int = 2
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_replicas: int | None = None
    target_sessions: float | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1 or (self.max_replicas is not None and self.max_replicas < self.replicas):
            raise ValueError("replicas must be >= 1, and max_replicas (when set) >= replicas")
        if self.cpus_per_replica <= 0 or self.gpus_per_replica < 0:
            raise ValueError("cpus_per_replica must be > 0 and gpus_per_replica >= 0")
        if self.target_sessions is not None and (self.max_replicas is None or self.target_sessions <= 0):
            raise ValueError("target_sessions is the autoscaling target: needs max_replicas, and > 0")

    def sized(self, config: ServerConfig) -> ServerConfig:
        """``config`` with engine workers and onnxruntime threads that ``config`` leaves at 0 ("one
        per core") set to the replica's CPUs: a container sees every core of its node, not
        the share Ray reserved for it."""
        cores = max(1, round(self.cpus_per_replica))
        engine = config.engine if config.engine.workers else replace(config.engine, workers=cores)
        return replace(config, engine=engine, threads=config.threads or cores)

    def deployment_options(self, max_sessions: int) -> dict[str, Any]:
        """``serve.deployment`` options for replicas of ``max_sessions`` sessions each."""
        actor: dict[str, float] = {"num_cpus": self.cpus_per_replica}
        if self.gpus_per_replica:
            actor["num_gpus"] = self.gpus_per_replica
        if self.max_replicas is None:
            return {"num_replicas": self.replicas, "ray_actor_options": actor}
        target = self.target_sessions or max(1.0, 0.75 * max_sessions)
        scaling = AutoscalingConfig(min_replicas=self.replicas, max_replicas=self.max_replicas,
                                    target_ongoing_requests=target)  # fmt: skip
        return {"autoscaling_config": scaling, "ray_actor_options": actor}


def streamvox_app(config: ServerConfig, placement: Placement | None = None) -> Any:
    """The Ray Serve application: replicas of the server for ``config`` as ``placement`` says
    (voices load on each replica), at most ``config.max_sessions`` sessions each, drained
    within ``config.drain_timeout_s`` when a replica is removed."""

    placement = placement or Placement()
    config = placement.sized(config)

    def build() -> StreamvoxAsgi:
        replica = _replica_name()
        app = create_asgi_app(config, replica=replica)
        reporter = MetricsReporter(app, replica)
        app.metrics_source = reporter.gather
        app.companions += [reporter.run, lambda: watch_for_stop(app)]
        return app

    replica_class = serve.ingress(build)(type("StreamvoxReplica", (), {"__doc__": "One streamvox engine."}))
    deployment = serve.deployment(
        replica_class,
        name="streamvox",
        max_ongoing_requests=config.max_sessions + HEADROOM,
        graceful_shutdown_timeout_s=config.drain_timeout_s + 5.0,
        request_router_config=RequestRouterConfig(request_router_class=FewestSessionsRouter),
        **placement.deployment_options(config.max_sessions),
    )
    return deployment.bind()


APP_ARGS = {
    "replicas": "replicas (each its own engine; default 2); the minimum when autoscaling",
    "max_replicas": "autoscale up to this many replicas on open sessions (default: a fixed count)",
    "target_sessions": "autoscaling: open sessions per replica to aim at (default 3/4 of max_sessions)",
    "cpus_per_replica": "Ray CPUs each replica reserves (default 1)",
    "gpus_per_replica": "GPUs each replica reserves (default 0; 1 for a GPU voice on a GPU node)",
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
    placement = Placement(
        replicas=int(args.get("replicas", 2)),
        cpus_per_replica=float(args.get("cpus_per_replica", 1.0)),
        gpus_per_replica=float(args.get("gpus_per_replica", 0.0)),
        max_replicas=None if args.get("max_replicas") is None else int(args["max_replicas"]),
        target_sessions=None if args.get("target_sessions") is None else float(args["target_sessions"]),
    )
    return streamvox_app(config, placement)


def run_local(config: ServerConfig, host: str, port: int, placement: Placement) -> int:
    """Start a local Ray instance, serve ``placement``'s replicas on ``host:port`` until SIGINT
    or SIGTERM, then shut Serve and Ray down."""
    import ray

    most = placement.max_replicas or placement.replicas
    ray.init(num_cpus=max(2, int(most * placement.cpus_per_replica) + 1), include_dashboard=False)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(streamvox_app(config, placement), route_prefix="/")
        print(f"streamvox on Ray Serve: {placement.replicas} replica(s) at http://{host}:{port}/", flush=True)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        stop.wait()
        serve.shutdown()
    finally:
        ray.shutdown()
    return 0

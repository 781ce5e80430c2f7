"""Drain a Ray Serve replica's sessions when Ray starts to remove it.

Ray Serve tells a replica nothing when it scales it down or replaces it: its
controller marks the replica ``STOPPING``, stops routing to it, waits up to
``graceful_shutdown_timeout_s`` for its ongoing requests to end, and then
kills it.  A WebSocket is an ongoing request that ends only when its client
leaves, so left alone every session on the replica would be cut when the
window ran out.  :func:`watch_for_stop` reads the replica's state from the
Serve controller (the ``ServeInstanceDetails`` that ``serve status`` and the
dashboard's REST API show) while the replica has sessions, and on
``STOPPING`` drains them the server's way: open contexts finish within
``drain_timeout_s`` or end ``cancelled`` with reason ``shutdown``, every
socket closes with 1001 (the client reconnects, and Ray routes it to a live
replica), after which Ray's own drain finds nothing ongoing.

One controller call per ``period_s`` per replica with sessions; none while
a replica is idle (an idle replica has nothing to drain).  Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streamvox.stream_server.asgi import StreamvoxAsgi

log = logging.getLogger(__name__)

CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
SERVE_NAMESPACE = "serve"
LEAVING = frozenset({"STOPPING", "STOPPED"})


def replicas_of(details: dict[str, Any], app_name: str, deployment: str) -> list[dict[str, Any]]:
    """The replicas ``details`` (a ``ServeInstanceDetails`` as a dict) lists for a deployment:
    each with its ``replica_id``, ``state`` and ``pid``."""
    deployments = details.get("applications", {}).get(app_name, {}).get("deployments", {})
    return list(deployments.get(deployment, {}).get("replicas", []))


def replica_state(details: dict[str, Any], app_name: str, deployment: str, replica_id: str) -> str | None:
    """The state ``details`` gives the replica (``"RUNNING"``, ``"STOPPING"``...), ``None`` if it
    does not list it."""
    for replica in replicas_of(details, app_name, deployment):
        if replica.get("replica_id") == replica_id:
            state = replica.get("state")
            return str(getattr(state, "value", state))  # a ReplicaState (a str Enum) or its value
    return None


async def watch_for_stop(app: StreamvoxAsgi, period_s: float = 1.0) -> None:
    """Run on a replica until cancelled: drain ``app`` once the controller lists this replica as
    stopping (or no longer lists it)."""
    import ray
    from ray import serve

    context = serve.get_replica_context()
    app_name, deployment = context.replica_id.deployment_id.app_name, context.replica_id.deployment_id.name
    replica_id = context.replica_id.unique_id
    controller = None
    while True:
        await asyncio.sleep(period_s)
        if not app.runtime.sessions:
            continue
        try:
            controller = controller or ray.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
            details = await controller.get_serve_instance_details.remote()
        except Exception as exc:  # the controller restarts; ask again next period
            log.warning("could not read this replica's state from the Serve controller: %s", exc)
            controller = None
            continue
        state = replica_state(details, app_name, deployment, replica_id)
        if state is None or state in LEAVING:
            log.info("replica %s is %s: draining %d session(s)", replica_id, state or "gone",
                     len(app.runtime.sessions))  # fmt: skip
            await app.runtime.drain()
            return

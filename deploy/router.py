"""A Ray Serve request router that counts sessions: each new one goes to the replica with the fewest.

Ray's default router (power of two choices over cached queue lengths) places
a burst of WebSockets unevenly: its cache is stale while the burst arrives, so
most of a burst can land on one replica and hit that replica's session limit
while another idles.  A WebSocket is one request that lasts as long as the
session, so the sessions a router has placed and not yet seen complete are
its replicas' open sessions.  This router ranks replicas by that count,
counting a request the moment it chooses for it (before Ray confirms the
placement), so concurrent arrivals see each other.  It runs inside Ray's
proxy (and any deployment handle), one instance per caller; with one proxy,
the counts are exact.  Built on Ray Serve's public ``RequestRouter`` API.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica


class FewestSessionsRouter(FIFOMixin, RequestRouter):
    """See the module docstring.  Called on the router's event loop only."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._placed: dict[str, ReplicaID] = {}
        """Each live request's replica (chosen, then confirmed when Ray routes it)."""

    def _open(self) -> Counter[ReplicaID]:
        return Counter(self._placed.values())

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        request_id = pending_request.metadata.internal_request_id if pending_request is not None else None
        if request_id is not None:
            self._placed.pop(request_id, None)  # a retry: count it where it goes now
        open_sessions = self._open()
        ranked = sorted(candidate_replicas, key=lambda r: (open_sessions[r.replica_id], r.replica_id.unique_id))
        if ranked and request_id is not None:
            self._placed[request_id] = ranked[0].replica_id
        return [[replica] for replica in ranked]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        self._placed[pending_request.metadata.internal_request_id] = replica_id

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._placed.pop(internal_request_id, None)

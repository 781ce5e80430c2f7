"""What every dialect's handlers share: the config, the voices, the engine, metrics, open sessions.

One :class:`ServerRuntime` per application.  Admission (the session limit and
the drain) is decided here once; each dialect reports a refusal in its own
error shape.  Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from streamvox.engine.core import EngineCore
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.metrics import Metrics


class DrainableSession(Protocol):
    async def drain(self, timeout: float) -> None: ...


@dataclass
class ServerRuntime:
    config: ServerConfig
    voices: VoiceRegistry
    engine: EngineCore
    metrics: Metrics
    sessions: set[DrainableSession] = field(default_factory=set)
    draining: bool = False
    wyoming_port: int | None = None
    """The Wyoming listener's port once it is up."""
    _client: EngineClient | None = field(default=None, init=False, repr=False)

    @property
    def engine_client(self) -> EngineClient:
        """The engine as this loop's sessions see it (made on first use, on the loop)."""
        if self._client is None:
            self._client = EngineClient(self.engine, asyncio.get_running_loop())
        return self._client

    def refusal(self) -> str | None:
        """Why a new session cannot be admitted now (``draining``, ``overloaded``), or ``None``."""
        if self.draining:
            return "draining"
        if len(self.sessions) >= self.config.max_sessions:
            return "overloaded"
        return None

    async def serve(self, session: DrainableSession, run: Callable[[], Awaitable[None]]) -> None:
        """Run an admitted session, counted among the open ones until it ends."""
        self.sessions.add(session)
        self.metrics.sessions.inc()
        try:
            await run()
        finally:
            self.sessions.discard(session)
            self.metrics.sessions.dec()

    async def drain(self) -> None:
        """Shutdown: refuse new sessions; let every open one finish within the drain window."""
        self.draining = True
        sessions = list(self.sessions)
        if sessions:
            timeout = self.config.drain_timeout_s
            await asyncio.gather(*(s.drain(timeout) for s in sessions), return_exceptions=True)

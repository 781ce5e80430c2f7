"""What every dialect's handlers share: the config, the voices, the engine, metrics, open sessions.

One :class:`ServerRuntime` per application.  Admission (the credential, the
drain, the session limit, the key's own limits) is decided here once, in
:meth:`ServerRuntime.admit`; each dialect reports a :class:`Refusal` in its
own error shape.  Event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Literal, Protocol

from streamvox.engine.core import EngineCore
from streamvox.engine.registry import VoiceRegistry
from streamvox.stream_server.auth import Access, AuthRefusal, Grant
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.keys import KeyRing
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import MemoryQuotaStore, QuotaExceeded, Usage
from streamvox.stream_server.voice_names import ScopedVoices, VoiceCatalog


def package_version() -> str:
    try:
        return version("streamvox")
    except PackageNotFoundError:
        return "0+unknown"


RefusalKind = Literal["unauthorized", "forbidden", "rate_limited", "overloaded", "draining"]


@dataclass(frozen=True)
class Refusal:
    """Why a session is not admitted; each dialect has its shape for every kind (docs/dialects.md)."""

    kind: RefusalKind
    message: str


@dataclass
class Admission:
    """An admitted session's grant, its meter and the voices it may use.  Leaving its ``with``
    block gives the key's session place back."""

    grant: Grant
    usage: Usage | None
    voices: VoiceCatalog

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        if self.usage is not None:
            self.usage.close()


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
    access: Access = field(default_factory=lambda: Access(KeyRing(), MemoryQuotaStore()))
    _client: EngineClient | None = field(default=None, init=False, repr=False)

    @classmethod
    def build(cls, config: ServerConfig, voices: VoiceRegistry | None = None) -> ServerRuntime:
        """A runtime for ``config``: its voices (loaded here unless given), an engine not yet
        started, metrics, and the access policy (keys, quotas in memory, origins, token secret)."""
        if voices is None:
            voices = VoiceRegistry.load(config.voices, config.include_bundled_voice, config.threads)
        access = Access(KeyRing(config.keys_file, config.api_keys), MemoryQuotaStore(), config.allow_origins,
                        config.token_secret)  # fmt: skip
        engine = EngineCore(voices, config.engine)
        return cls(config, voices, engine, Metrics(engine), access=access)

    @property
    def engine_client(self) -> EngineClient:
        """The engine as this loop's sessions see it (made on first use, on the loop)."""
        if self._client is None:
            self._client = EngineClient(self.engine, asyncio.get_running_loop())
        return self._client

    def admit(self, outcome: Grant | AuthRefusal) -> Admission | Refusal:
        """Admit a session whose credential gave ``outcome`` (see ``auth.grant_of``), or say why not.

        Use the admission as a context manager around the session, so its key's place is
        given back however the handler ends."""
        refusal = self._refusal(outcome)
        if refusal is not None:
            self.metrics.errors.labels(refusal.kind).inc()
            if refusal.kind == "overloaded":
                self.metrics.sessions_rejected.inc()
            return refusal
        assert isinstance(outcome, Grant)
        voices = self.voices_for(outcome)
        if not voices.ids():
            self.metrics.errors.labels("forbidden").inc()
            return Refusal("forbidden", "none of the voices this key or token may use is served here")
        usage = outcome.usage(self.access.quotas)
        if usage is not None:
            try:
                usage.open()
            except QuotaExceeded as exc:
                self.metrics.errors.labels("rate_limited").inc()
                return Refusal("rate_limited", exc.message)
        return Admission(outcome, usage, voices)

    def voices_for(self, grant: Grant) -> VoiceCatalog:
        """The voices ``grant`` may use (all of them when anonymous)."""
        return self.voices if grant.key is None else ScopedVoices(self.voices, grant.allows_voice)

    def _refusal(self, outcome: Grant | AuthRefusal) -> Refusal | None:
        if isinstance(outcome, AuthRefusal):
            return Refusal(outcome.kind, outcome.message)
        if self.draining:
            return Refusal("draining", "the server is shutting down; retry on another")
        if len(self.sessions) >= self.config.max_sessions:
            return Refusal("overloaded", f"server at capacity ({self.config.max_sessions} sessions); retry later")
        return None

    def health(self, protocol: int) -> tuple[bool, dict[str, object]]:
        """``GET /healthz``'s answer (``protocol``: the native protocol's version): healthy while
        serving; not while draining, or with the engine's ``problem`` (its thread died, or every
        worker is stuck in a unit past the deadline)."""
        problem = self.engine.problem
        ok = problem is None and not self.draining
        body: dict[str, object] = {
            "status": "ok" if ok else ("draining" if self.draining else "engine_down"),
            "problem": problem,
            "version": package_version(),
            "protocol": protocol,
            "sessions": len(self.sessions),
            "voices": len(self.voices.infos()),
        }
        return ok, body

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

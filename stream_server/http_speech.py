"""One utterance spoken into an HTTP response, for the dialects whose speech is a POST.

The whole text is known up front: it is one context of a one-context
:class:`Conversation`, segmented and fed to the engine at once, its audio
written to the response by the dialect's presenter as each payload is made.
A client that goes away mid-stream cancels the context (the engine stops
within one unit); a shutdown lets it finish within the drain window.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager

from streamvox.codecs.formats import OutputFormat
from streamvox.engine.api import SynthesisParams, Voice
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.conversation import Conversation, Presenter
from streamvox.stream_server.quotas import Usage
from streamvox.stream_server.routes import HttpResponse
from streamvox.stream_server.runtime import ServerRuntime

_ids = itertools.count(1)


class ResponseWriter:
    """Writes into a started HTTP response; a write that fails marks the client gone (once) and
    calls ``on_gone``, and later writes are dropped.  The base of the HTTP dialects' presenters."""

    def __init__(self, response: HttpResponse, on_gone: Callable[[], None]) -> None:
        self.response = response
        self.on_gone = on_gone
        self.gone = False
        self.last_write = time.monotonic()

    async def write(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            await self.response.write(data)
            self.last_write = time.monotonic()
        except ConnectionError:
            self.gone = True
            self.on_gone()

    def corked(self) -> AbstractContextManager[None]:
        return self.response.corked()

    async def finish(self) -> None:
        """End the response (the client may have gone meanwhile: then nothing more happens)."""
        try:
            await self.response.finish()
        except ConnectionError:
            self.gone = True


class HttpSpeech:
    """One POSTed utterance; :meth:`run` returns once every byte was written (or the client left)."""

    def __init__(
        self,
        runtime: ServerRuntime,
        presenter: Presenter,
        last_write: Callable[[], float],
        drop: Callable[[], None],
        usage: Usage | None = None,
    ) -> None:
        """A client that stops reading while audio waits gets its connection cut (``drop``).
        ``usage``: the key's meter; the route has charged the text (before answering), the
        audio is charged as it is sent."""
        self.id = f"h{next(_ids)}"
        self.runtime = runtime
        self.conversation = Conversation(
            self.id,
            runtime.engine_client,
            runtime.config,
            runtime.metrics,
            presenter,
            last_write,
            lambda _ctx: drop(),
            usage,
        )
        self.context: Context | None = None

    async def run(
        self,
        voice: Voice,
        fmt: OutputFormat,
        params: SynthesisParams,
        text: str,
        timestamps: str = "none",
        started: Callable[[Context], Awaitable[None]] | None = None,
    ) -> Context:
        """Speak ``text``; ``started`` runs (on the sender, before any audio) once the context is open."""
        conversation = self.conversation
        conversation.start()
        ctx = conversation.open_context("speech", voice, fmt, params, timestamps)
        self.context = ctx
        if started is not None:
            conversation.post(lambda: started(ctx))
        now = time.monotonic()
        try:
            ctx.push_text(text, now, charge=False)
            ctx.end(now)
            await ctx.finished.wait()
            await conversation.flushed()
        finally:
            await conversation.close()
        return ctx

    def gone(self) -> None:
        """The client disconnected: stop generating."""
        if self.context is not None and self.context.open:
            self.conversation.cancel(self.context, "client_gone")

    async def drain(self, timeout: float) -> None:
        """Shutdown: finish within ``timeout`` seconds, else cut."""
        ctx = self.context
        if ctx is None:
            return
        try:
            await asyncio.wait_for(ctx.finished.wait(), timeout)
        except TimeoutError:
            self.conversation.cancel(ctx, "shutdown")

"""The part of every session that no wire format changes: contexts, their engine streams, and
the ordered outbox that turns engine events into what a dialect sends.

A dialect (native, ElevenLabs, Cartesia, OpenAI's HTTP, ...) parses its own
messages and calls :meth:`Conversation.open_context`, the context's text
methods and :meth:`Conversation.cancel`; the conversation feeds the engine,
keeps each context's timeline and sample accounting, encodes audio payload
by payload (so a cancel lands between two packets and ends on a short fade)
and hands every step to the dialect's :class:`Presenter` in order, on one
sender task.  A dialect's own messages that must keep their place among the
audio (errors, acknowledgements) go through :meth:`Conversation.post`.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from streamvox.codecs.formats import OutputFormat, StreamEncoder
from streamvox.engine.api import SynthesisParams, Voice
from streamvox.engine.events import (
    AudioChunk,
    EngineEvent,
    SegmentFinished,
    SegmentStarted,
    SegmentWords,
    StreamAborted,
    StreamDone,
    StreamFailed,
)
from streamvox.engine.text.segmenter import Segmenter, Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import Usage
from streamvox.stream_server.timeline import TimedWord

log = logging.getLogger(__name__)


class Presenter(Protocol):
    """How one dialect puts a context's life on its wire (all called on the sender task, in order)."""

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """Segment ``index`` starts at ``start_sample`` (model rate) of the context's audio."""
        ...

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        """Segment ``index``'s word timings, in the context's text and audio."""
        ...

    async def audio(self, ctx: Context, payload: bytes) -> None:
        """One encoded payload of the context's audio (the encoder's header first, if any)."""
        ...

    def corked(self) -> AbstractContextManager[None]:
        """Payloads written while inside leave the socket together when it ends (a burst of
        packets from one vocoder window: see :mod:`.corking`)."""
        ...

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Every sample of segment ``index`` has been handed to the encoder (and its payloads sent)."""
        ...

    async def done(self, ctx: Context, done: StreamDone) -> None:
        """Every sample of the context was sent."""
        ...

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        """The context was cut (its fade already sent); ``played_ms`` as the cancel gave it."""
        ...

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        """Synthesis failed for this context only."""
        ...


@dataclass(frozen=True)
class _Cancel:
    context: Context
    reason: str
    played_ms: float | None


@dataclass(frozen=True)
class _Words:
    context: Context
    index: int
    words: list[TimedWord]
    estimated: bool


@dataclass(frozen=True)
class _Post:
    send: Callable[[], Awaitable[None]]


class Conversation:
    """The contexts of one session and the sender that speaks them.  Event-loop only."""

    def __init__(
        self,
        session_id: str,
        engine: EngineClient,
        config: ServerConfig,
        metrics: Metrics,
        presenter: Presenter,
        last_write: Callable[[], float],
        on_slow_reader: Callable[[Context], None],
        usage: Usage | None = None,
    ) -> None:
        """``last_write`` says when the socket last accepted bytes; ``on_slow_reader`` is called
        once a held context's socket has accepted nothing for ``slow_reader_timeout_s`` (the
        conversation has stopped that context; the dialect closes its socket).  ``usage``
        charges every context's text and audio to the session's key."""
        self.id = session_id
        self.engine = engine
        self.config = config
        self.metrics = metrics
        self.presenter = presenter
        self._last_write = last_write
        self._on_slow_reader = on_slow_reader
        self.usage = usage
        self.contexts: dict[str, Context] = {}
        """Contexts not retired yet, by id."""
        self._outbox: asyncio.Queue[object] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._slow_reader_seen = False

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name=f"sender-{self.id}")

    # --- contexts ------------------------------------------------------------------------------

    def open_context(
        self, context_id: str, voice: Voice, fmt: OutputFormat, params: SynthesisParams, timestamps: str = "none"
    ) -> Context:
        """Start context ``context_id`` and its engine stream (the dialect checked its limits)."""
        ctx = Context(
            id=context_id,
            stream_id=f"{self.id}/{context_id}",
            voice=voice,
            encoder=StreamEncoder(fmt, voice.sample_rate),
            segmenter=Segmenter(self.config.segmenter),
            engine=self.engine,
            config=self.config,
            metrics=self.metrics,
            last_write=self._last_write,
            on_slow_reader=self._slow_reader,
            timestamps=timestamps,
            usage=self.usage,
        )
        self.contexts[context_id] = ctx
        self.engine.open(ctx.stream_id, voice.id, params, self._accept)
        return ctx

    def open_contexts(self) -> list[Context]:
        return [ctx for ctx in self.contexts.values() if ctx.open]

    def finished_contexts(self) -> list[Context]:
        return [ctx for ctx in self.contexts.values() if not ctx.open]

    def retire(self, ctx: Context) -> None:
        """Forget a finished context (its id may then mean a new one, if the dialect allows)."""
        self.contexts.pop(ctx.id, None)

    def cancel(self, ctx: Context, reason: str, played_ms: float | None = None) -> None:
        """Stop ``ctx`` now: no audio after its fade, then the presenter's ``cancelled``."""
        if ctx.cancel_requested:
            return
        ctx.stop_generation()
        self._outbox.put_nowait(_Cancel(ctx, reason, played_ms))

    def post(self, send: Callable[[], Awaitable[None]]) -> None:
        """Run ``send`` on the sender task, after everything queued before it."""
        self._outbox.put_nowait(_Post(send))

    async def drain(self, timeout: float) -> None:
        """Shutdown: open contexts get ``timeout`` seconds to finish, then are cut; returns once
        everything queued has been handed to the presenter."""
        try:
            await asyncio.wait_for(asyncio.gather(*(c.finished.wait() for c in self.open_contexts())), timeout)
        except TimeoutError:
            for ctx in self.open_contexts():
                self.cancel(ctx, "shutdown")
        await self.flushed()

    async def flushed(self) -> None:
        """Everything queued so far has been handed to the presenter."""
        await self._outbox.join()

    async def close(self) -> None:
        """The client is gone: stop every engine stream and the sender."""
        for ctx in self.contexts.values():
            ctx.disarm_watchdog()
            if ctx.open and not ctx.cancel_requested:
                ctx.stop_generation()
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass

    # --- engine events in -------------------------------------------------------------------------

    def by_stream(self, stream_id: str) -> Context | None:
        """The live context whose engine stream is ``stream_id`` (its id is ``session/context``)."""
        ctx = self.contexts.get(stream_id.removeprefix(f"{self.id}/"))
        return ctx if ctx is not None and ctx.stream_id == stream_id else None

    def _accept(self, event: EngineEvent) -> None:
        """An engine event reaches the loop: queue it, count the audio the socket still owes and
        keep the context's timeline (current at once, so a barge-in can use it)."""
        ctx = self.by_stream(event.stream_id)
        if ctx is not None:
            if isinstance(event, AudioChunk):
                ctx.audio_queued(len(event.pcm))
            elif isinstance(event, SegmentStarted):
                ctx.segment_started(event.index, event.start_sample)
            elif isinstance(event, SegmentWords):
                words = ctx.segment_words(event.index, event.words, event.estimated)
                self._outbox.put_nowait(_Words(ctx, event.index, words, event.estimated))
                return
        self._outbox.put_nowait(event)

    def _slow_reader(self, ctx: Context) -> None:
        if self._slow_reader_seen:
            return
        self._slow_reader_seen = True
        log.warning(
            "session %s: client read nothing for %.1f s with %.1f s of audio waiting; closing",
            self.id,
            self.config.slow_reader_timeout_s,
            ctx.unsent_samples / ctx.voice.sample_rate,
        )
        self.metrics.errors.labels("slow_reader").inc()
        self.metrics.contexts.labels("slow_reader").inc()
        ctx.stop_generation()
        ctx.finished.set()
        self._on_slow_reader(ctx)

    # --- the sender -------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                await self._deliver(item)
            except (ConnectionResetError, RuntimeError) as exc:
                log.info("session %s: send failed (%s); client gone", self.id, exc)
            except Exception:
                log.exception("session %s: sender failed on %r", self.id, type(item).__name__)
            finally:
                self._outbox.task_done()

    async def _deliver(self, item: object) -> None:
        if isinstance(item, _Post):
            await item.send()
            return
        if isinstance(item, _Cancel):
            await self._finish_cancel(item.context, item.reason, item.played_ms)
            return
        if isinstance(item, _Words):
            ctx = item.context
            if not ctx.cancel_requested and ctx.open:
                await self.presenter.words(ctx, item.index, item.words, item.estimated)
            return
        ctx = self.by_stream(getattr(item, "stream_id", ""))
        if ctx is None or ctx.cancel_requested or not ctx.open:
            return
        if isinstance(item, SegmentStarted):
            span, _ = ctx.segments[item.index]
            await self.presenter.segment(ctx, item.index, span, item.start_sample)
        elif isinstance(item, AudioChunk):
            ctx.encoder.feed(item.pcm)
            await self._pump(ctx)
            ctx.audio_sent(len(item.pcm))
        elif isinstance(item, SegmentFinished):
            ctx.segments_finished += 1
            ctx.rearm_if_buffered()  # the engine is idle: hurry deadlines apply now
            await self.presenter.segment_finished(ctx, item.index)
        elif isinstance(item, StreamDone):
            ctx.encoder.finish()
            await self._pump(ctx)
            if not ctx.cancel_requested:
                await self.presenter.done(ctx, item)
                ctx.finished.set()
                self.metrics.contexts.labels("done").inc()
                self.metrics.audio_seconds.inc(ctx.seconds_sent)
                if (ttfa := ctx.ttfa_ms()) is not None:
                    self.metrics.ttfa.observe(ttfa / 1000)
                if (rtf := ctx.rtf(item)) is not None:
                    self.metrics.rtf.observe(rtf)
        elif isinstance(item, StreamFailed):
            await self.presenter.failed(ctx, item.code, item.message)
            ctx.finished.set()
            self.metrics.contexts.labels("failed").inc()
        elif isinstance(item, StreamAborted):
            await self._finish_cancel(ctx, "engine", None)

    async def _pump(self, ctx: Context) -> None:
        """Send every payload the encoder has, stopping at once if a cancel arrives."""
        with self.presenter.corked():
            for payload in ctx.payloads():
                await self.presenter.audio(ctx, payload)

    async def _finish_cancel(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        if ctx.finished.is_set():
            return
        if ctx.header_sent and (fade := ctx.encoder.fade_out()) is not None:
            await self.presenter.audio(ctx, fade)
        await self.presenter.cancelled(ctx, reason, played_ms)
        ctx.finished.set()
        self.metrics.contexts.labels("cancelled").inc()
        self.metrics.audio_seconds.inc(ctx.seconds_sent)

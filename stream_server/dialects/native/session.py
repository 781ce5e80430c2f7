"""One native-protocol session: client messages to context operations, engine events to frames.

Protocol 1 speaks one context at a time.  Protocol 2 (``?protocol=2``) lets up to
``max_contexts`` contexts speak at once, each its own engine stream; each
context is given a channel number (1-255, announced by a ``context`` event
before its audio) and every binary frame starts with that one byte.

The reader task parses client messages and turns them into operations on the
session's :class:`~streamvox.stream_server.conversation.Conversation`; the
conversation's sender hands each context's life back to :class:`NativePresenter`,
which writes the native events and frames.  Event-loop only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from streamvox.codecs.formats import FormatError, OutputFormat, resolve_format
from streamvox.codecs.opus import OpusSettings
from streamvox.engine.api import SynthesisParams, UnknownVoiceError, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.conversation import Conversation
from streamvox.stream_server.dialects.native.events import (
    PROTOCOL_VERSION,
    alignment_event,
    cancelled_event,
    context_event,
    done_event,
    error_event,
    ready_event,
    segment_event,
    words_event,
)
from streamvox.stream_server.dialects.native.messages import (
    Cancel,
    ClientMessage,
    Configure,
    End,
    Flush,
    Keepalive,
    ProtocolError,
    Report,
    Text,
    parse_client_message,
)
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.idle import IdleTimer
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import QuotaExceeded, Usage
from streamvox.stream_server.timeline import TimedWord
from streamvox.stream_server.transport import Transport
from streamvox.stream_server.voice_names import VoiceCatalog

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = "default"
_ENDED_IDS_KEPT = 1024
_session_ids = itertools.count(1)


@dataclass
class _Settings:
    voice: Voice
    format: OutputFormat
    params: SynthesisParams
    timestamps: str = "none"


class NativePresenter:
    """The native events and binary frames of a session's contexts (see docs/protocol.md)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        await self.session.send_json(segment_event(ctx, index, span, start_sample))

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        if ctx.timestamps == "none":
            return
        await self.session.send_json(words_event(ctx, index, words, estimated))
        if ctx.timestamps == "char":
            span, _ = ctx.segments[index]
            await self.session.send_json(alignment_event(ctx, index, span, words, estimated))

    async def audio(self, ctx: Context, payload: bytes) -> None:
        """One binary frame of ``ctx``'s audio (protocol 2: after its channel byte)."""
        channel = self.session.channels.get(ctx.id)
        await self.session.transport.send_bytes(payload if channel is None else bytes((channel,)) + payload)

    def corked(self) -> AbstractContextManager[None]:
        return self.session.transport.corked()

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Nothing to say when a segment ends."""

    async def done(self, ctx: Context, done: StreamDone) -> None:
        await self.session.send_json(done_event(ctx, done))

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        heard = None
        if self.session.protocol >= 2 or ctx.timestamps != "none" or played_ms is not None:
            heard = ctx.heard(played_ms)
        await self.session.send_json(cancelled_event(ctx, reason, heard))

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        await self.session.send_json(error_event(code, message, False, ctx.id))


class Session:
    """Serves one client socket.  Not thread-safe: event-loop only."""

    def __init__(
        self,
        transport: Transport,
        engine: EngineClient,
        voices: VoiceCatalog,
        config: ServerConfig,
        metrics: Metrics,
        protocol: int = PROTOCOL_VERSION,
        usage: Usage | None = None,
    ) -> None:
        self.id = f"s{next(_session_ids)}"
        self.protocol = protocol
        self.transport = transport
        self.engine = engine
        self.voices = voices
        self.config = config
        self.metrics = metrics
        self.draining = False
        self.conversation = Conversation(
            self.id,
            engine,
            config,
            metrics,
            NativePresenter(self),
            lambda: transport.last_write,
            self._on_slow_reader,
            usage,
        )
        voice = voices.get(None)
        self._settings = _Settings(
            voice,
            resolve_format("opus", None, voice.sample_rate, config.opus),
            SynthesisParams(seed=config.default_seed),
        )
        self._active: Context | None = None
        """The context started last: the one a message without ``context_id`` means."""
        self.channels: dict[str, int] = {}
        """Protocol 2: each open context's channel, the first byte of its binary frames."""
        self._ended_ids: dict[str, None] = {}
        self._idle = IdleTimer(config.idle_timeout_s, self._speaking, self._on_idle)

    async def run(self) -> None:
        """Read until the client leaves; always cleans up the engine streams."""
        self.conversation.start()
        self._queue_json(self._ready_event())
        self._idle.start()
        try:
            async for frame in self.transport:
                self._idle.touch()
                if frame.kind == "text":
                    assert isinstance(frame.data, str)
                    await self._on_text_frame(frame.data)
                elif frame.kind == "binary":
                    self._queue_json(
                        error_event("binary_not_supported", "send JSON text frames; binary frames are not accepted")
                    )
                else:
                    log.info("session %s: socket error; closing", self.id)
                    break
        finally:
            await self._close()

    async def drain(self, timeout: float) -> None:
        """Shutdown: let open contexts finish for ``timeout`` seconds, then cancel them; close with 1001."""
        self.draining = True
        await asyncio.gather(*(self._drain_context(ctx, timeout) for ctx in self._open_contexts()))
        await self.conversation.flushed()
        await self.transport.close(1001, b"server shutting down")

    async def _drain_context(self, ctx: Context, timeout: float) -> None:
        try:
            await asyncio.wait_for(ctx.finished.wait(), timeout)
        except TimeoutError:
            self._cancel(ctx, "shutdown")
            try:
                await asyncio.wait_for(ctx.finished.wait(), 2.0)
            except TimeoutError:
                pass

    def _open_contexts(self) -> list[Context]:
        return self.conversation.open_contexts()

    async def _on_text_frame(self, data: str) -> None:
        size = len(data.encode("utf-8"))
        if size > self.config.max_message_bytes:
            self._queue_json(
                error_event(
                    "message_too_large", f"message of {size} bytes exceeds {self.config.max_message_bytes} bytes"
                )
            )
            return
        try:
            message = parse_client_message(data, self.config.max_text_chars)
            self._handle(message)
        except ProtocolError as exc:
            self._queue_json(exc.event())
            if exc.fatal:
                await self.transport.close(1008, exc.code.encode())

    def _handle(self, message: ClientMessage) -> None:
        now = time.monotonic()
        if isinstance(message, Keepalive):
            return
        if isinstance(message, Configure):
            self._configure(message)
        elif isinstance(message, Text):
            ctx = self._context_for_text(message.context_id)
            if ctx.segmenter.total_chars + len(message.text) > self.config.max_context_chars:
                raise ProtocolError(
                    "text_too_long",
                    f"context would exceed {self.config.max_context_chars} characters; text dropped",
                    context_id=ctx.id,
                )
            try:
                ctx.push_text(message.text, now)
            except QuotaExceeded as exc:
                self.metrics.errors.labels("rate_limited").inc()
                raise ProtocolError("rate_limited", f"{exc.message}; text dropped", context_id=ctx.id) from None
        elif isinstance(message, Flush):
            self._open_context(message.context_id, "flush").flush(now)
        elif isinstance(message, End):
            self._open_context(message.context_id, "end").end(now)
        elif isinstance(message, Report):
            ctx = self._lookup(message.context_id)
            if ctx is None:
                raise ProtocolError("unknown_context", "report for no context", context_id=message.context_id)
            ctx.report(message.played_ms, message.underruns, message.underrun_ms)
        elif isinstance(message, Cancel):
            ctx = self._lookup(message.context_id)
            if ctx is None:
                raise ProtocolError("unknown_context", "no context to cancel", context_id=message.context_id)
            if not ctx.open:
                raise ProtocolError("context_ended", f"context {ctx.id!r} already finished", context_id=ctx.id)
            self._cancel(ctx, "client", message.played_ms)

    def _configure(self, message: Configure) -> None:
        speaking = self._open_contexts()
        if speaking:
            raise ProtocolError("context_busy", "configure only between contexts", context_id=speaking[-1].id)
        settings = self._settings
        voice = settings.voice
        if message.voice is not None:
            try:
                voice = self.voices.get(message.voice)
            except UnknownVoiceError:
                known = ", ".join(self.voices.ids())
                raise ProtocolError("unknown_voice", f"no voice {message.voice!r}; available: {known}") from None
        fmt = settings.format
        if message.format is not None or voice is not settings.voice:
            request = message.format
            codec = request.codec if request else fmt.codec
            rate = request.sample_rate if request else (fmt.sample_rate if fmt.codec != "pcm_s16le" else None)
            try:
                opus = self.config.opus
                if request is not None and (request.bitrate is not None or request.application is not None):
                    opus = OpusSettings(
                        frame_ms=opus.frame_ms,
                        application=request.application or opus.application,
                        bitrate=request.bitrate or opus.bitrate,
                        complexity=opus.complexity,
                    )
                fmt = resolve_format(codec, rate, voice.sample_rate, opus)
            except (FormatError, ValueError) as exc:
                raise ProtocolError("bad_format", str(exc)) from None
        params = settings.params
        if "speed" not in voice.honours and message.speed not in (None, 1.0):
            raise ProtocolError("invalid_value", f"speed is not adjustable for {voice.id} (a {voice.kind} voice)")
        if message.speaker is not None and not 0 <= message.speaker < max(1, voice.num_speakers):
            raise ProtocolError("invalid_value", f"speaker must be < {voice.num_speakers} for {voice.id}")
        params = SynthesisParams(
            length_scale=(voice.length_scale / message.speed) if message.speed else params.length_scale,
            noise_scale=params.noise_scale,
            noise_w=params.noise_w,
            speaker=params.speaker if message.speaker is None else message.speaker,
            seed=params.seed if message.seed is None else message.seed,
            noise=params.noise if message.noise is None else message.noise,
        )
        timestamps = settings.timestamps if message.timestamps is None else message.timestamps
        self._settings = _Settings(voice, fmt, params, timestamps)
        if message.idle_timeout_s is not None:
            self._idle.set_timeout(message.idle_timeout_s)
        self._queue_json(self._ready_event())

    def _ready_event(self) -> dict[str, Any]:
        s = self._settings
        return ready_event(self.id, s.voice, s.format, self.config, self.protocol)

    def _lookup(self, context_id: str | None) -> Context | None:
        if context_id is None:
            return self._active
        ctx = self.conversation.contexts.get(context_id)
        if ctx is None and self.protocol >= 2 and context_id in self._ended_ids:
            raise ProtocolError("context_ended", f"context {context_id!r} already finished", context_id=context_id)
        return ctx

    def _open_context(self, context_id: str | None, verb: str) -> Context:
        ctx = self._lookup(context_id)
        if ctx is None:
            if context_id is not None and context_id in self._ended_ids:
                raise ProtocolError("context_ended", f"context {context_id!r} already finished", context_id=context_id)
            raise ProtocolError("unknown_context", f"{verb}: no such context; send text first", context_id=context_id)
        if ctx.ended or not ctx.open:
            raise ProtocolError("context_ended", f"{verb} after end of context {ctx.id!r}", context_id=ctx.id)
        return ctx

    def _context_for_text(self, context_id: str | None) -> Context:
        cid = context_id or (self._active.id if self._active is not None else DEFAULT_CONTEXT)
        known = self.conversation.contexts.get(cid)
        if known is not None:
            if known.ended or not known.open:
                raise ProtocolError(
                    "context_ended", f"text after end of context {cid!r}; use a new context_id", context_id=cid
                )
            return known
        if cid in self._ended_ids:
            raise ProtocolError("context_ended", f"context {cid!r} already finished", context_id=cid)
        speaking = self._open_contexts()
        if speaking and self.protocol < 2:
            raise ProtocolError(
                "context_busy", f"context {speaking[-1].id!r} is still speaking; end or cancel it first", context_id=cid
            )
        if len(speaking) >= self.config.max_contexts:
            raise ProtocolError(
                "too_many_contexts",
                f"{len(speaking)} contexts are open, the most a session may have; end or cancel one first",
                context_id=cid,
            )
        if self.draining:
            raise ProtocolError("server_draining", "server is shutting down; no new contexts", context_id=cid)
        for finished in self.conversation.finished_contexts():
            self._retire(finished)
        s = self._settings
        ctx = self.conversation.open_context(cid, s.voice, s.format, s.params, s.timestamps)
        self._active = ctx
        if self.protocol >= 2:
            used = set(self.channels.values())
            channel = next(n for n in range(1, 256) if n not in used)
            self.channels[cid] = channel
            self._queue_json(context_event(ctx, channel))
        return ctx

    def _retire(self, ctx: Context) -> None:
        self.conversation.retire(ctx)
        self.channels.pop(ctx.id, None)
        self._ended_ids[ctx.id] = None
        while len(self._ended_ids) > _ENDED_IDS_KEPT:
            self._ended_ids.pop(next(iter(self._ended_ids)))

    def _cancel(self, ctx: Context, reason: str, played_ms: float | None = None) -> None:
        self.conversation.cancel(ctx, reason, played_ms)

    def _speaking(self) -> bool:
        """A context is open: its audio is still being made or sent."""
        return bool(self._open_contexts())

    def _on_idle(self) -> None:
        timeout = self._idle.timeout_s
        self._queue_json(error_event("idle_timeout", f"no message for {timeout:g} s; closing", fatal=True))
        asyncio.create_task(self._close_idle(), name=f"idle-{self.id}")  # noqa: RUF006

    async def _close_idle(self) -> None:
        await self.conversation.flushed()  # the error event goes out first
        await self.transport.close(1000, b"idle_timeout")

    def _on_slow_reader(self, ctx: Context) -> None:
        asyncio.create_task(self._close_slow_reader(), name=f"slow-reader-{self.id}")  # noqa: RUF006

    async def _close_slow_reader(self) -> None:
        """Close with 1008 ``slow_reader``; if even the close frame cannot be written, drop the socket."""
        try:
            await asyncio.wait_for(self.transport.close(1008, b"slow_reader", drain=False), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        self.transport.abort()

    def _queue_json(self, event: dict[str, Any]) -> None:
        """Send ``event`` in its turn, after everything queued before it."""
        self.conversation.post(lambda: self.send_json(event))

    async def send_json(self, event: dict[str, Any]) -> None:
        if event["type"] == "error":
            self.metrics.errors.labels(event["code"]).inc()
        if not self.transport.closed:
            await self.transport.send_text(json.dumps(event, separators=(",", ":")))

    async def _close(self) -> None:
        self._idle.stop()
        await self.conversation.close()

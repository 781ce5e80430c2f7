"""One native-protocol session: client messages to context operations, engine events to frames.

Protocol 1 speaks one context at a time.  Protocol 2 (``?protocol=2``) lets up to
``max_contexts`` contexts speak at once, each its own engine stream; each
context is given a channel number (1-255, announced by a ``context`` event
before its audio) and every binary frame starts with that one byte.

Two tasks share a session: the reader parses client messages and turns them
into operations on the open context (see ``contexts.py``); the sender drains
the outbox in order, encoding each context's audio payload by payload so a
cancel can stop between any two packets and end on a short fade.  Everything
here runs on the event loop; engine events arrive through the engine client.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from streamvox.codecs.formats import FormatError, OutputFormat, StreamEncoder, resolve_format
from streamvox.codecs.opus import OpusSettings
from streamvox.engine.api import SynthesisParams, UnknownVoiceError, Voice
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
from streamvox.engine.registry import VoiceRegistry
from streamvox.engine.text.segmenter import Segmenter
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
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
from streamvox.stream_server.timeline import TimedWord
from streamvox.stream_server.transport import Transport

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


@dataclass(frozen=True)
class _CancelMarker:
    context: Context
    reason: str
    played_ms: float | None = None


@dataclass(frozen=True)
class _Words:
    """A segment's word timings, lifted into its context, waiting for their turn to be sent."""

    context: Context
    index: int
    words: list[TimedWord]
    estimated: bool


class Session:
    """Serves one client socket.  Not thread-safe: event-loop only."""

    def __init__(
        self,
        transport: Transport,
        engine: EngineClient,
        voices: VoiceRegistry,
        config: ServerConfig,
        metrics: Metrics,
        protocol: int = PROTOCOL_VERSION,
    ) -> None:
        self.id = f"s{next(_session_ids)}"
        self.protocol = protocol
        self.transport = transport
        self.engine = engine
        self.voices = voices
        self.config = config
        self.metrics = metrics
        self.draining = False
        self._outbox: asyncio.Queue[object] = asyncio.Queue()
        voice = voices.get(None)
        self._settings = _Settings(
            voice, resolve_format("opus", None, voice.sample_rate, config.opus), SynthesisParams()
        )
        self._active: Context | None = None
        """The context started last: the one a message without ``context_id`` means."""
        self._contexts: dict[str, Context] = {}
        """Contexts not retired yet, by id (protocol 1: the active one alone)."""
        self._channels: dict[str, int] = {}
        """Protocol 2: each open context's channel, the first byte of its binary frames."""
        self._ended_ids: dict[str, None] = {}
        self._sender: asyncio.Task[None] | None = None
        self._closing_slow_reader = False
        self._idle = IdleTimer(config.idle_timeout_s, self._speaking, self._on_idle)

    async def run(self) -> None:
        """Read until the client leaves; always cleans up the engine streams."""
        self._sender = asyncio.create_task(self._send_loop(), name=f"sender-{self.id}")
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
        await self._outbox.join()
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
        return [ctx for ctx in self._contexts.values() if ctx.open]

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
            ctx.push_text(message.text, now)
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
        ctx = self._contexts.get(context_id)
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
        known = self._contexts.get(cid)
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
        for finished in [c for c in self._contexts.values() if not c.open]:
            self._retire(finished)
        s = self._settings
        ctx = Context(
            id=cid,
            stream_id=f"{self.id}/{cid}",
            voice=s.voice,
            encoder=StreamEncoder(s.format, s.voice.sample_rate),
            segmenter=Segmenter(self.config.segmenter),
            engine=self.engine,
            config=self.config,
            metrics=self.metrics,
            last_write=lambda: self.transport.last_write,
            on_slow_reader=self._on_slow_reader,
            timestamps=s.timestamps,
        )
        self._active = ctx
        self._contexts[cid] = ctx
        if self.protocol >= 2:
            used = set(self._channels.values())
            channel = next(n for n in range(1, 256) if n not in used)
            self._channels[cid] = channel
            self._queue_json(context_event(ctx, channel))
        self.engine.open(ctx.stream_id, s.voice.id, s.params, self._accept)
        return ctx

    def _retire(self, ctx: Context) -> None:
        del self._contexts[ctx.id]
        self._channels.pop(ctx.id, None)
        self._ended_ids[ctx.id] = None
        while len(self._ended_ids) > _ENDED_IDS_KEPT:
            self._ended_ids.pop(next(iter(self._ended_ids)))

    def _cancel(self, ctx: Context, reason: str, played_ms: float | None = None) -> None:
        if ctx.cancel_requested:
            return
        ctx.stop_generation()
        self._outbox.put_nowait(_CancelMarker(ctx, reason, played_ms))

    def _accept(self, event: EngineEvent) -> None:
        """An engine event reaches the loop: queue it, count the audio the socket still owes and
        keep the context's timeline (current at once, so a barge-in can use it)."""
        ctx = self._by_stream(event.stream_id)
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

    def _speaking(self) -> bool:
        """A context is open: its audio is still being made or sent."""
        return bool(self._open_contexts())

    def _on_idle(self) -> None:
        timeout = self._idle.timeout_s
        self._queue_json(error_event("idle_timeout", f"no message for {timeout:g} s; closing", fatal=True))
        asyncio.create_task(self._close_idle(), name=f"idle-{self.id}")  # noqa: RUF006

    async def _close_idle(self) -> None:
        await self._outbox.join()  # the error event goes out first
        await self.transport.close(1000, b"idle_timeout")

    def _on_slow_reader(self, ctx: Context) -> None:
        if self._closing_slow_reader:
            return
        self._closing_slow_reader = True
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
        asyncio.create_task(self._close_slow_reader(), name=f"slow-reader-{self.id}")  # noqa: RUF006

    async def _close_slow_reader(self) -> None:
        """Close with 1008 ``slow_reader``; if even the close frame cannot be written, drop the socket."""
        try:
            await asyncio.wait_for(self.transport.close(1008, b"slow_reader", drain=False), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        self.transport.abort()

    def _queue_json(self, event: dict[str, Any]) -> None:
        self._outbox.put_nowait(event)

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
        if isinstance(item, dict):
            await self._send_json(item)
            return
        if isinstance(item, _CancelMarker):
            await self._finish_cancel(item)
            return
        if isinstance(item, _Words):
            await self._send_words(item)
            return
        ctx = self._by_stream(getattr(item, "stream_id", ""))
        if ctx is None or ctx.cancel_requested or not ctx.open:
            return
        if isinstance(item, SegmentStarted):
            span, _ = ctx.segments[item.index]
            await self._send_json(segment_event(ctx, item.index, span, item.start_sample))
        elif isinstance(item, AudioChunk):
            ctx.encoder.feed(item.pcm)
            await self._pump(ctx)
            ctx.audio_sent(len(item.pcm))
        elif isinstance(item, SegmentFinished):
            ctx.segments_finished += 1
            ctx.rearm_if_buffered()  # the engine is idle: hurry deadlines apply now
        elif isinstance(item, StreamDone):
            ctx.encoder.finish()
            await self._pump(ctx)
            if not ctx.cancel_requested:
                done = done_event(ctx, item)
                await self._send_json(done)
                ctx.finished.set()
                self.metrics.contexts.labels("done").inc()
                self.metrics.audio_seconds.inc(done["seconds"])
                if done["ttfa_ms"] is not None:
                    self.metrics.ttfa.observe(done["ttfa_ms"] / 1000)
                if done["rtf"] is not None:
                    self.metrics.rtf.observe(done["rtf"])
        elif isinstance(item, StreamFailed):
            await self._send_json(error_event(item.code, item.message, False, ctx.id))
            ctx.finished.set()
            self.metrics.contexts.labels("failed").inc()
        elif isinstance(item, StreamAborted):
            await self._finish_cancel(_CancelMarker(ctx, "engine"))

    def _by_stream(self, stream_id: str) -> Context | None:
        """The live context whose engine stream is ``stream_id`` (its id is ``session/context``)."""
        ctx = self._contexts.get(stream_id.removeprefix(f"{self.id}/"))
        return ctx if ctx is not None and ctx.stream_id == stream_id else None

    async def _pump(self, ctx: Context) -> None:
        """Send every payload the encoder has, stopping at once if a cancel arrives."""
        for payload in ctx.payloads():
            await self._send_audio(ctx, payload)

    async def _send_audio(self, ctx: Context, payload: bytes) -> None:
        """One binary frame of ``ctx``'s audio (protocol 2: after its channel byte)."""
        channel = self._channels.get(ctx.id)
        await self.transport.send_bytes(payload if channel is None else bytes((channel,)) + payload)

    async def _send_words(self, item: _Words) -> None:
        ctx = item.context
        mode = ctx.timestamps
        if mode == "none" or ctx.cancel_requested or not ctx.open:
            return
        await self._send_json(words_event(ctx, item.index, item.words, item.estimated))
        if mode == "char":
            span, _ = ctx.segments[item.index]
            await self._send_json(alignment_event(ctx, item.index, span, item.words, item.estimated))

    async def _finish_cancel(self, marker: _CancelMarker) -> None:
        ctx = marker.context
        if ctx.finished.is_set():
            return
        if ctx.header_sent and (fade := ctx.encoder.fade_out()) is not None:
            await self._send_audio(ctx, fade)
        heard = None
        if self.protocol >= 2 or ctx.timestamps != "none" or marker.played_ms is not None:
            heard = ctx.heard(marker.played_ms)
        await self._send_json(cancelled_event(ctx, marker.reason, heard))
        ctx.finished.set()
        self.metrics.contexts.labels("cancelled").inc()
        self.metrics.audio_seconds.inc(ctx.encoder.samples_out / ctx.encoder.format.sample_rate)

    async def _send_json(self, event: dict[str, Any]) -> None:
        if event["type"] == "error":
            self.metrics.errors.labels(event["code"]).inc()
        if not self.transport.closed:
            await self.transport.send_text(json.dumps(event, separators=(",", ":")))

    async def _close(self) -> None:
        self._idle.stop()
        for ctx in self._contexts.values():
            ctx.disarm_watchdog()
            if ctx.open and not ctx.cancel_requested:
                ctx.stop_generation()
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass

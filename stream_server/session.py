"""One WebSocket session: text in, segments to the engine, audio and events out.

Two tasks share a session: the reader (the aiohttp handler) parses client
messages and feeds the segmenter and the engine; the sender drains the
outbox in order, encoding each context's audio payload by payload so a cancel
can stop between any two packets and end on a short fade.  Everything here
runs on the event loop; engine events arrive through ``call_soon_threadsafe``.

A client that stops reading blocks the sender once the socket buffers are
full.  Audio then piles up in the outbox; past ``max_unsent_s`` seconds the
engine holds the stream (memory stays bounded), and if the socket accepts
nothing for ``slow_reader_timeout_s`` the session is closed with 1008
``slow_reader``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from streamvox.codecs.formats import FormatError, OutputFormat, StreamEncoder, resolve_format
from streamvox.codecs.opus import OpusSettings
from streamvox.engine.core import EngineCore
from streamvox.engine.events import (
    AudioChunk,
    EngineEvent,
    SegmentFinished,
    SegmentStarted,
    StreamAborted,
    StreamDone,
    StreamFailed,
    SynthesisParams,
)
from streamvox.engine.segmenter import Segmenter, Span
from streamvox.engine.voices import UnknownVoiceError, Voice, VoiceRegistry
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.protocol import (
    PROTOCOL_VERSION,
    Cancel,
    ClientMessage,
    Configure,
    End,
    Flush,
    ProtocolError,
    Report,
    Text,
    error_event,
    parse_client_message,
)

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = "default"
_ENDED_IDS_KEPT = 1024
_session_ids = itertools.count(1)


@dataclass
class _Settings:
    voice: Voice
    format: OutputFormat
    params: SynthesisParams


@dataclass
class _Context:
    id: str
    stream_id: str
    voice: Voice
    encoder: StreamEncoder
    segmenter: Segmenter
    segments: dict[int, tuple[Span, float]] = field(default_factory=dict)
    next_index: int = 0
    ended: bool = False
    cancel_requested: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    first_speakable_at: float | None = None
    first_audio_at: float | None = None
    header_sent: bool = False
    timer: asyncio.TimerHandle | None = None
    segments_finished: int = 0
    reported_underruns: int = 0
    reported_underrun_s: float = 0.0
    unsent_samples: int = 0
    """Model-rate samples the engine produced that are not yet written to the socket."""
    held: bool = False
    watchdog: asyncio.TimerHandle | None = None

    @property
    def open(self) -> bool:
        return not self.finished.is_set()


@dataclass(frozen=True)
class _CancelMarker:
    context: _Context
    reason: str


class Session:
    """Serves one client socket.  Not thread-safe: event-loop only."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        engine: EngineCore,
        voices: VoiceRegistry,
        config: ServerConfig,
        metrics: Metrics,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        """``transport`` is the socket under ``ws``: aborted if a slow reader's close cannot be sent."""
        self.id = f"s{next(_session_ids)}"
        self.ws = ws
        self._transport = transport
        self.engine = engine
        self.voices = voices
        self.config = config
        self.metrics = metrics
        self.draining = False
        self._loop = asyncio.get_running_loop()
        self._outbox: asyncio.Queue[object] = asyncio.Queue()
        voice = voices.get(None)
        self._settings = _Settings(
            voice, resolve_format("opus", None, voice.sample_rate, config.opus), SynthesisParams()
        )
        self._active: _Context | None = None
        self._ended_ids: dict[str, None] = {}
        self._sender: asyncio.Task[None] | None = None
        self._last_write = time.monotonic()
        """When the socket last accepted a frame: a reader that stopped shows as no progress."""
        self._closing_slow_reader = False

    async def run(self) -> None:
        """Read until the client leaves; always cleans up the engine streams."""
        self._sender = asyncio.create_task(self._send_loop(), name=f"sender-{self.id}")
        self._queue_json(self._ready_event())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text_frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._queue_json(
                        error_event("binary_not_supported", "send JSON text frames; binary frames are not accepted")
                    )
                elif msg.type == WSMsgType.ERROR:
                    log.info("session %s: socket error %s", self.id, self.ws.exception())
                    break
        finally:
            await self._close()

    async def drain(self, timeout: float) -> None:
        """Shutdown: let the open context finish for ``timeout`` seconds, then cancel it; close with 1001."""
        self.draining = True
        ctx = self._active
        if ctx is not None and ctx.open:
            try:
                await asyncio.wait_for(ctx.finished.wait(), timeout)
            except TimeoutError:
                self._cancel(ctx, "shutdown")
                try:
                    await asyncio.wait_for(ctx.finished.wait(), 2.0)
                except TimeoutError:
                    pass
        await self._outbox.join()
        await self.ws.close(code=1001, message=b"server shutting down")

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
                await self.ws.close(code=1008, message=exc.code.encode())

    def _handle(self, message: ClientMessage) -> None:
        now = time.monotonic()
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
            self._submit(ctx, ctx.segmenter.push(message.text, now), now)
            self._arm_timer(ctx)
        elif isinstance(message, Flush):
            ctx = self._open_context(message.context_id, "flush")
            self._submit(ctx, ctx.segmenter.flush(), now)
            self._arm_timer(ctx)
        elif isinstance(message, End):
            ctx = self._open_context(message.context_id, "end")
            self._submit(ctx, ctx.segmenter.flush(), now)
            ctx.ended = True
            self._disarm_timer(ctx)
            self.engine.finish(ctx.stream_id)
        elif isinstance(message, Report):
            self._report(message)
        elif isinstance(message, Cancel):
            ctx = self._lookup(message.context_id)
            if ctx is None:
                raise ProtocolError("unknown_context", "no context to cancel", context_id=message.context_id)
            if not ctx.open:
                raise ProtocolError("context_ended", f"context {ctx.id!r} already finished", context_id=ctx.id)
            self._cancel(ctx, "client")

    def _report(self, message: Report) -> None:
        """The listener's playback position paces the engine; its underruns feed the metrics."""
        ctx = self._lookup(message.context_id)
        if ctx is None:
            raise ProtocolError("unknown_context", "report for no context", context_id=message.context_id)
        if message.underruns:
            new = message.underruns - ctx.reported_underruns
            if new > 0:
                self.metrics.client_underruns.inc(new)
                ctx.reported_underruns = message.underruns
        if message.underrun_ms:
            new_s = message.underrun_ms / 1000 - ctx.reported_underrun_s
            if new_s > 0:
                self.metrics.client_underrun_seconds.inc(new_s)
                ctx.reported_underrun_s = message.underrun_ms / 1000
        if ctx.open and not ctx.cancel_requested:
            self.engine.report_playback(ctx.stream_id, message.played_ms / 1000)

    def _configure(self, message: Configure) -> None:
        if self._active is not None and self._active.open:
            raise ProtocolError("context_busy", "configure only between contexts", context_id=self._active.id)
        settings = self._settings
        voice = settings.voice
        if message.voice is not None:
            try:
                voice = self.voices.get(message.voice)
            except UnknownVoiceError:
                known = ", ".join(info.id for info in self.voices.infos())
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
        if voice.kind == "gpt-sovits" and message.speed not in (None, 1.0):
            raise ProtocolError("invalid_value", f"speed is not adjustable for {voice.id} (a GPT-SoVITS voice)")
        if message.speaker is not None and not 0 <= message.speaker < max(1, voice.config.num_speakers):
            raise ProtocolError("invalid_value", f"speaker must be < {voice.config.num_speakers} for {voice.id}")
        params = SynthesisParams(
            length_scale=(voice.config.length_scale / message.speed) if message.speed else params.length_scale,
            noise_scale=params.noise_scale,
            noise_w=params.noise_w,
            speaker=params.speaker if message.speaker is None else message.speaker,
            seed=params.seed if message.seed is None else message.seed,
            noise=params.noise if message.noise is None else message.noise,
        )
        self._settings = _Settings(voice, fmt, params)
        self._queue_json(self._ready_event())

    def _ready_event(self) -> dict[str, Any]:
        s = self._settings
        return {
            "type": "ready",
            "protocol": PROTOCOL_VERSION,
            "session_id": self.id,
            "voice": {"id": s.voice.id, "sample_rate": s.voice.sample_rate, "language": s.voice.config.language},
            "format": s.format.describe(),
            "limits": {
                "max_message_bytes": self.config.max_message_bytes,
                "max_text_chars": self.config.max_text_chars,
                "max_context_chars": self.config.max_context_chars,
            },
        }

    def _lookup(self, context_id: str | None) -> _Context | None:
        active = self._active
        if context_id is None or (active is not None and active.id == context_id):
            return active
        return None

    def _open_context(self, context_id: str | None, verb: str) -> _Context:
        ctx = self._lookup(context_id)
        if ctx is None:
            if context_id is not None and context_id in self._ended_ids:
                raise ProtocolError("context_ended", f"context {context_id!r} already finished", context_id=context_id)
            raise ProtocolError("unknown_context", f"{verb}: no such context; send text first", context_id=context_id)
        if ctx.ended or not ctx.open:
            raise ProtocolError("context_ended", f"{verb} after end of context {ctx.id!r}", context_id=ctx.id)
        return ctx

    def _context_for_text(self, context_id: str | None) -> _Context:
        cid = context_id or (self._active.id if self._active is not None else DEFAULT_CONTEXT)
        active = self._active
        if active is not None and active.id == cid:
            if active.ended or not active.open:
                raise ProtocolError(
                    "context_ended", f"text after end of context {cid!r}; use a new context_id", context_id=cid
                )
            return active
        if cid in self._ended_ids:
            raise ProtocolError("context_ended", f"context {cid!r} already finished", context_id=cid)
        if active is not None and active.open:
            raise ProtocolError(
                "context_busy", f"context {active.id!r} is still speaking; end or cancel it first", context_id=cid
            )
        if self.draining:
            raise ProtocolError("server_draining", "server is shutting down; no new contexts", context_id=cid)
        if active is not None:
            self._retire(active)
        s = self._settings
        ctx = _Context(
            id=cid,
            stream_id=f"{self.id}/{cid}",
            voice=s.voice,
            encoder=StreamEncoder(s.format, s.voice.sample_rate),
            segmenter=Segmenter(self.config.segmenter),
        )
        self._active = ctx
        self.engine.open(ctx.stream_id, s.voice, s.params, self._sink)
        return ctx

    def _retire(self, ctx: _Context) -> None:
        self._ended_ids[ctx.id] = None
        while len(self._ended_ids) > _ENDED_IDS_KEPT:
            self._ended_ids.pop(next(iter(self._ended_ids)))

    def _submit(self, ctx: _Context, spans: list[Span], now: float) -> None:
        for span in spans:
            index = ctx.next_index
            ctx.next_index += 1
            ctx.segments[index] = (span, now)
            if ctx.first_speakable_at is None:
                ctx.first_speakable_at = now
            self.engine.add_segment(ctx.stream_id, index, span.text)

    def _dry_at(self, ctx: _Context) -> float | None:
        """When the listener runs out of audio (``first_audio_at + seconds sent``), once the
        engine has finished every span submitted so far; ``None`` while it is still at work."""
        if ctx.first_audio_at is None or ctx.segments_finished < ctx.next_index:
            return None
        return ctx.first_audio_at + ctx.encoder.samples_out / ctx.encoder.format.sample_rate

    def _hurry(self, ctx: _Context, now: float) -> str | None:
        """How urgently buffered text must be spoken mid-sentence (see ``hurry_margin_s``)."""
        dry = self._dry_at(ctx)
        if dry is None or now < dry - self.config.hurry_margin_s:
            return None
        return "word" if now >= dry - self.config.hurry_margin_s / 2 else "clause"

    def _arm_timer(self, ctx: _Context) -> None:
        self._disarm_timer(ctx)
        if ctx.ended or not ctx.segmenter.pending.strip():
            return
        deadlines = [d for d in (ctx.segmenter.deadline(),) if d is not None]
        dry = self._dry_at(ctx)
        if dry is not None:
            now = time.monotonic()
            margin = self.config.hurry_margin_s
            deadlines.append(dry - margin if now < dry - margin else dry - margin / 2)
        if deadlines:
            ctx.timer = self._loop.call_later(max(0.0, min(deadlines) - time.monotonic()), self._on_timer, ctx)

    def _disarm_timer(self, ctx: _Context) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None

    def _on_timer(self, ctx: _Context) -> None:
        ctx.timer = None
        if ctx.open and not ctx.ended and not ctx.cancel_requested:
            now = time.monotonic()
            self._submit(ctx, ctx.segmenter.poll(now, hurry=self._hurry(ctx, now)), now)
            self._arm_timer(ctx)

    def _cancel(self, ctx: _Context, reason: str) -> None:
        if ctx.cancel_requested:
            return
        self._stop_generation(ctx)
        self._outbox.put_nowait(_CancelMarker(ctx, reason))

    def _stop_generation(self, ctx: _Context) -> None:
        """No more audio for ``ctx``: its timers stop and the engine drops its stream."""
        ctx.cancel_requested = True
        self._disarm_timer(ctx)
        self._disarm_watchdog(ctx)
        self.engine.abort(ctx.stream_id)

    def _sink(self, event: EngineEvent) -> None:
        """Called on the engine thread."""
        try:
            self._loop.call_soon_threadsafe(self._accept, event)
        except RuntimeError:
            pass  # the loop is closed: the session is gone

    def _accept(self, event: EngineEvent) -> None:
        """An engine event reaches the loop: queue it, and count the audio the socket still owes."""
        if isinstance(event, AudioChunk):
            ctx = self._by_stream(event.stream_id)
            if ctx is not None:
                ctx.unsent_samples += len(event.pcm)
                self._update_hold(ctx)
        self._outbox.put_nowait(event)

    def _update_hold(self, ctx: _Context) -> None:
        """Hold the engine while more than ``max_unsent_s`` of audio waits for the socket; resume
        below half of it.  While held, a socket that accepts nothing for ``slow_reader_timeout_s``
        belongs to a client that stopped reading."""
        limit = self.config.max_unsent_s * ctx.voice.sample_rate
        if not ctx.held and ctx.unsent_samples > limit and ctx.open and not ctx.cancel_requested:
            ctx.held = True
            self.engine.hold(ctx.stream_id, True)
            self._arm_watchdog(ctx, self._last_write)
        elif ctx.held and ctx.unsent_samples <= limit / 2:
            ctx.held = False
            self._disarm_watchdog(ctx)
            if ctx.open and not ctx.cancel_requested:
                self.engine.hold(ctx.stream_id, False)

    def _arm_watchdog(self, ctx: _Context, last_write: float) -> None:
        ctx.watchdog = self._loop.call_later(self.config.slow_reader_timeout_s, self._check_reader, ctx, last_write)

    def _disarm_watchdog(self, ctx: _Context) -> None:
        if ctx.watchdog is not None:
            ctx.watchdog.cancel()
            ctx.watchdog = None

    def _check_reader(self, ctx: _Context, last_write: float) -> None:
        ctx.watchdog = None
        if not ctx.held or self._closing_slow_reader:
            return
        if self._last_write > last_write:
            self._arm_watchdog(ctx, self._last_write)  # slow, but reading: keep waiting
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
        self._stop_generation(ctx)
        ctx.finished.set()
        asyncio.create_task(self._close_slow_reader(), name=f"slow-reader-{self.id}")  # noqa: RUF006

    async def _close_slow_reader(self) -> None:
        """Close with 1008 ``slow_reader``; if even the close frame cannot be written, drop the socket."""
        try:
            await asyncio.wait_for(self.ws.close(code=1008, message=b"slow_reader", drain=False), 2.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        if self._transport is not None:
            self._transport.abort()

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
        ctx = self._by_stream(getattr(item, "stream_id", ""))
        if ctx is None or ctx.cancel_requested or not ctx.open:
            return
        if isinstance(item, SegmentStarted):
            span, _ = ctx.segments[item.index]
            fmt = ctx.encoder.format
            start = round(item.start_sample * fmt.sample_rate / ctx.voice.sample_rate)
            await self._send_json(
                {
                    "type": "segment",
                    "context_id": ctx.id,
                    "index": item.index,
                    "text": span.text,
                    "char_start": span.start,
                    "char_end": span.end,
                    "start_sample": start,
                    "start_s": round(start / fmt.sample_rate, 4),
                }
            )
        elif isinstance(item, AudioChunk):
            ctx.encoder.feed(item.pcm)
            await self._pump(ctx)
            ctx.unsent_samples -= len(item.pcm)
            if ctx.held:
                self._update_hold(ctx)
        elif isinstance(item, SegmentFinished):
            ctx.segments_finished += 1
            if not ctx.ended and ctx.segmenter.pending.strip():
                self._arm_timer(ctx)  # the engine is idle: hurry deadlines apply now
        elif isinstance(item, StreamDone):
            ctx.encoder.finish()
            await self._pump(ctx)
            if not ctx.cancel_requested:
                done = self._done_event(ctx, item)
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

    def _by_stream(self, stream_id: str) -> _Context | None:
        ctx = self._active
        if ctx is not None and ctx.stream_id == stream_id:
            return ctx
        return None

    async def _pump(self, ctx: _Context) -> None:
        """Send every payload the encoder has, stopping at once if a cancel arrives."""
        if not ctx.header_sent:
            ctx.header_sent = True
            header = ctx.encoder.header()
            if header is not None:
                await self._send_bytes(header)
        sent = False
        while not ctx.cancel_requested and (payload := ctx.encoder.pop()) is not None:
            await self._send_bytes(payload)
            sent = True
            if ctx.first_audio_at is None:
                ctx.first_audio_at = time.monotonic()
        if sent and not ctx.ended and ctx.segmenter.pending.strip():
            self._arm_timer(ctx)  # the listener's buffer grew: the hurry deadline moved

    async def _finish_cancel(self, marker: _CancelMarker) -> None:
        ctx = marker.context
        if ctx.finished.is_set():
            return
        if ctx.header_sent and (fade := ctx.encoder.fade_out()) is not None:
            await self._send_bytes(fade)
        fmt = ctx.encoder.format
        await self._send_json(
            {
                "type": "cancelled",
                "context_id": ctx.id,
                "reason": marker.reason,
                "samples": ctx.encoder.samples_out,
                "seconds": round(ctx.encoder.samples_out / fmt.sample_rate, 4),
            }
        )
        ctx.finished.set()
        self.metrics.contexts.labels("cancelled").inc()
        self.metrics.audio_seconds.inc(ctx.encoder.samples_out / fmt.sample_rate)

    def _done_event(self, ctx: _Context, done: StreamDone) -> dict[str, Any]:
        fmt = ctx.encoder.format
        audio_s = done.samples / ctx.voice.sample_rate
        ttfa = None
        if ctx.first_audio_at is not None and ctx.first_speakable_at is not None:
            ttfa = round((ctx.first_audio_at - ctx.first_speakable_at) * 1000, 2)
        return {
            "type": "done",
            "context_id": ctx.id,
            "samples": ctx.encoder.samples_out,
            "sample_rate": fmt.sample_rate,
            "seconds": round(ctx.encoder.samples_out / fmt.sample_rate, 4),
            "model_samples": done.samples,
            "segments": len(ctx.segments),
            "ttfa_ms": ttfa,
            "rtf": round(done.compute_s / audio_s, 4) if audio_s else None,
        }

    async def _send_json(self, event: dict[str, Any]) -> None:
        if event["type"] == "error":
            self.metrics.errors.labels(event["code"]).inc()
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(event, separators=(",", ":")))
            self._last_write = time.monotonic()

    async def _send_bytes(self, payload: bytes) -> None:
        await self.ws.send_bytes(payload)
        self._last_write = time.monotonic()

    async def _close(self) -> None:
        ctx = self._active
        if ctx is not None:
            self._disarm_watchdog(ctx)
        if ctx is not None and ctx.open and not ctx.cancel_requested:
            self._stop_generation(ctx)
        if self._sender is not None:
            self._sender.cancel()
            try:
                await self._sender
            except asyncio.CancelledError:
                pass

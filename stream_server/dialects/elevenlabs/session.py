"""ElevenLabs' WebSocket ``stream-input`` and ``multi-stream-input``, onto our contexts.

``stream-input`` is one context: a first message ``{"text": " "}`` (with
``voice_settings``, ``generation_config``, maybe ``xi_api_key``), then text,
``flush``, and ``{"text": ""}`` to end; the server answers ``{"audio": b64,
"isFinal": null, "alignment", "normalizedAlignment"}`` messages, then
``{"isFinal": true}`` on its own and closes (1000).  ``multi-stream-input``
names a context in every message (``context_id``, or ``contextId``): a new id
opens one, ``flush`` speaks what it holds, ``close_context`` ends it (what was
sent is still spoken: Pipecat sends it at the end of every turn, right after
its last text), ``{"text": ""}`` is a keepalive and ``close_socket`` finishes
every context and closes.  Server messages carry ``contextId`` and
``context_id``.  Errors are ``{"message", "error", "code"}``, then close 1008.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from streamvox.codecs.formats import OutputFormat
from streamvox.engine.api import SynthesisParams, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.conversation import Conversation
from streamvox.stream_server.dialects.elevenlabs.alignment import AlignmentQueue
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.idle import IdleTimer
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import QuotaExceeded, Usage
from streamvox.stream_server.text_checks import text_problem
from streamvox.stream_server.timeline import TimedWord, char_alignment
from streamvox.stream_server.transport import Transport

DEFAULT_INACTIVITY_S = 20.0
MAX_INACTIVITY_S = 180.0
SPEED_RANGE = (0.7, 1.2)
"""ElevenLabs' ``voice_settings.speed`` range."""
SINGLE_CONTEXT = "default"
_ids = itertools.count(1)


class ElevenLabsError(Exception):
    """Ends the socket the ElevenLabs way: an error message, then close 1008."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"message": self.message, "error": self.error, "code": 1008}


@dataclass(frozen=True)
class SocketSettings:
    """What the URL says: the voice, the format and the session's limits."""

    voice: Voice
    format: OutputFormat
    inactivity_s: float
    multi: bool
    seed: int | None


class ElevenLabsSession:
    """Serves one ElevenLabs socket.  Event-loop only."""

    def __init__(
        self,
        transport: Transport,
        engine: EngineClient,
        config: ServerConfig,
        metrics: Metrics,
        settings: SocketSettings,
        usage: Usage | None = None,
    ) -> None:
        self.id = f"e{next(_ids)}"
        self.transport = transport
        self.config = config
        self.metrics = metrics
        self.settings = settings
        self.conversation = Conversation(
            self.id, engine, config, metrics, self, lambda: transport.last_write, self._on_slow_reader, usage
        )
        self._alignment: dict[str, AlignmentQueue] = {}
        self._closing = False
        """The client ended its input (``{"text": ""}``, ``close_socket``): finish, then close."""
        self._finisher: asyncio.Task[None] | None = None
        self.draining = False
        self._idle = IdleTimer(settings.inactivity_s, self._speaking, self._on_idle)

    # --- the reader ---------------------------------------------------------------------------

    async def run(self) -> None:
        self.conversation.start()
        self._idle.start()
        try:
            async for frame in self.transport:
                self._idle.touch()
                if frame.kind != "text":
                    if frame.kind == "binary":
                        await self._fail(ElevenLabsError("invalid_message", "Binary frames are not accepted."))
                    break
                assert isinstance(frame.data, str)
                try:
                    if self._closing:
                        raise ElevenLabsError("invalid_message", "Message after the end of input.")
                    self._handle(_parse(frame.data))
                except ElevenLabsError as exc:
                    await self._fail(exc)
                    break
                if self._closing and self._finisher is None:
                    self._finisher = asyncio.create_task(self._finish_and_close(), name=f"finish-{self.id}")
        finally:
            self._idle.stop()
            if self._finisher is not None and not self._finisher.done():
                self._finisher.cancel()
            await self.conversation.close()

    def _handle(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.settings.multi:
            self._handle_multi(message, now)
        else:
            self._handle_single(message, now)

    def _handle_single(self, message: dict[str, Any], now: float) -> None:
        ctx = self.conversation.contexts.get(SINGLE_CONTEXT)
        text = message.get("text")
        if not isinstance(text, str):
            raise ElevenLabsError("invalid_message", "Every message needs a 'text' string.")
        if ctx is None:
            if text.strip():
                raise ElevenLabsError("invalid_message", "The first message must be the initial ' ' text.")
            self._open(SINGLE_CONTEXT, message)
            return
        if not ctx.speaking:
            raise ElevenLabsError("invalid_message", "Text after the end of input.")
        if text == "":
            ctx.end(now)
            self._closing = True
            return
        self._push(ctx, text, now)
        if message.get("flush") is True:
            ctx.flush(now)

    def _handle_multi(self, message: dict[str, Any], now: float) -> None:
        if message.get("close_socket") is True:
            self._closing = True
            for ctx in self.conversation.open_contexts():
                if ctx.speaking:
                    ctx.end(now)
            return
        cid = message.get("context_id", message.get("contextId"))
        text = message.get("text")
        if cid is None:
            if text == "":
                return  # a context-less keepalive
            cid = SINGLE_CONTEXT
        if not isinstance(cid, str) or not cid or len(cid) > 128:
            raise ElevenLabsError("invalid_message", "context_id must be a non-empty string.")
        ctx = self.conversation.contexts.get(cid)
        if ctx is None or not ctx.open:
            if message.get("close_context") is True or (message.get("flush") is True and not text):
                return  # nothing to close or flush: ElevenLabs ignores it too
            if ctx is not None:
                self.conversation.retire(ctx)
            if text is None:
                raise ElevenLabsError("invalid_message", f"Context {cid!r} must open with a 'text' message.")
            ctx = self._open(cid, message)
        if message.get("close_context") is True:
            if ctx.speaking:
                ctx.end(now)
            return
        if text is not None:
            if not isinstance(text, str):
                raise ElevenLabsError("invalid_message", "'text' must be a string.")
            if text and ctx.speaking:
                self._push(ctx, text, now)
        if message.get("flush") is True and ctx.speaking:
            ctx.flush(now)

    def _open(self, cid: str, message: dict[str, Any]) -> Context:
        if len(self.conversation.open_contexts()) >= self.config.max_contexts:
            raise ElevenLabsError(
                "max_active_conversations",
                f"Maximum simultaneous contexts per WebSocket connection exceeded ({self.config.max_contexts}). "
                "Please close an existing context before opening a new one.",
            )
        if self.draining:
            raise ElevenLabsError("server_draining", "The server is shutting down.")
        params = self._synthesis_params(message.get("voice_settings"))
        for finished in self.conversation.finished_contexts():
            self.conversation.retire(finished)
            self._alignment.pop(finished.id, None)
        self._alignment[cid] = AlignmentQueue()
        ctx = self.conversation.open_context(cid, self.settings.voice, self.settings.format, params, "char")
        text = message.get("text")
        if isinstance(text, str) and text.strip():
            self._push(ctx, text, time.monotonic())
        return ctx

    def _synthesis_params(self, voice_settings: Any) -> SynthesisParams:
        seed = self.settings.seed
        if voice_settings is None:
            return SynthesisParams(seed=seed)
        if not isinstance(voice_settings, dict):
            raise ElevenLabsError("invalid_message", "voice_settings must be an object.")
        speed = voice_settings.get("speed")
        if speed is None:
            return SynthesisParams(seed=seed)
        low, high = SPEED_RANGE
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not low <= speed <= high:
            raise ElevenLabsError("invalid_message", f"voice_settings.speed must be between {low} and {high}.")
        voice = self.settings.voice
        if "speed" not in voice.honours:
            return SynthesisParams(seed=seed)  # as ElevenLabs' models without speed control: ignored
        return SynthesisParams(length_scale=voice.length_scale / float(speed), seed=seed)

    def _push(self, ctx: Context, text: str, now: float) -> None:
        if (problem := text_problem(text)) is not None:
            raise ElevenLabsError("invalid_message", problem)
        if ctx.segmenter.total_chars + len(text) > self.config.max_context_chars:
            raise ElevenLabsError("input_too_long", f"A context may hold {self.config.max_context_chars} characters.")
        try:
            ctx.push_text(text, now)
        except QuotaExceeded as exc:
            raise ElevenLabsError("quota_exceeded", f"{exc.message}.") from None

    # --- closing ------------------------------------------------------------------------------

    async def _fail(self, error: ElevenLabsError) -> None:
        self.metrics.errors.labels(f"elevenlabs_{error.error}").inc()
        for ctx in self.conversation.open_contexts():
            ctx.stop_generation()
        if not self.transport.closed:
            await self.transport.send_text(json.dumps(error.body()))
            await self.transport.close(1008, error.error.encode()[:120])

    async def _finish_and_close(self) -> None:
        """Input ended: wait for every context's last byte and ``isFinal``, then close 1000."""
        await asyncio.gather(*(ctx.finished.wait() for ctx in self.conversation.open_contexts()))
        await self.conversation.flushed()
        if not self.transport.closed:
            await self.transport.close(1000, b"")

    async def drain(self, timeout: float) -> None:
        """Shutdown: open contexts get ``timeout`` seconds, then are cut; close 1001."""
        self.draining = True
        await self.conversation.drain(timeout)
        await self.transport.close(1001, b"server shutting down")

    def _speaking(self) -> bool:
        """Audio is being made or sent (an open context merely waiting for text is not)."""
        return any(c.ended or c.segments_finished < c.next_index for c in self.conversation.open_contexts())

    def _on_idle(self) -> None:
        timeout = self._idle.timeout_s
        error = ElevenLabsError(
            "input_timeout_exceeded", f"Have not received new text for {timeout:g} seconds. Closing the connection."
        )
        asyncio.create_task(self._fail(error), name=f"idle-{self.id}")  # noqa: RUF006

    def _on_slow_reader(self, ctx: Context) -> None:
        self.transport.abort()

    # --- the presenter (the sender task) -------------------------------------------------------

    def _context_fields(self, ctx: Context) -> dict[str, Any]:
        return {"contextId": ctx.id, "context_id": ctx.id} if self.settings.multi else {}

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.transport.closed:
            await self.transport.send_text(json.dumps(message, separators=(",", ":")))

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """ElevenLabs has no segment events."""

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        span, _ = ctx.segments[index]
        start_s = ctx.segment_start_s(index)
        queue = self._alignment.get(ctx.id)
        if queue is not None:
            queue.add(ctx.segmenter.text, char_alignment(span.text, span.start, words, start_s))

    def corked(self) -> AbstractContextManager[None]:
        return self.transport.corked()

    async def audio(self, ctx: Context, payload: bytes) -> None:
        queue = self._alignment.get(ctx.id)
        alignment = queue.take() if queue is not None else None
        message = {
            "audio": base64.b64encode(payload).decode(),
            "isFinal": None,
            "normalizedAlignment": alignment,
            "alignment": alignment,
            **self._context_fields(ctx),
        }
        await self._send(message)

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Nothing to say when a segment ends."""

    async def done(self, ctx: Context, done: StreamDone) -> None:
        await self._send({"isFinal": True, **self._context_fields(ctx)})

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        await self._send({"isFinal": True, **self._context_fields(ctx)})

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        await self._send({"message": message, "error": code, "code": 1011, **self._context_fields(ctx)})


def _parse(data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise ElevenLabsError("invalid_message", "Invalid JSON.") from None
    if not isinstance(message, dict):
        raise ElevenLabsError("invalid_message", "Messages must be JSON objects.")
    return message

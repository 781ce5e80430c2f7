"""Cartesia's WebSocket ``/tts/websocket``, onto our contexts.

A generation request names its context (``context_id``); its ``transcript``
is appended, ``continue: true`` says more will follow (without it the context
ends after this transcript), ``flush: true`` speaks what it holds and is
answered with ``flush_done``, and ``{"context_id", "cancel": true}`` stops it
(nothing more is sent for it).  The server sends ``chunk`` (base64 raw audio
in the requested encoding and rate), ``timestamps`` (``word_timestamps``:
words, start and end seconds) when ``add_timestamps`` is on, ``done``, and
``error``; every message carries ``type`` and ``context_id``.  A bad request
gets an ``error`` for its context; the socket stays open.  Event-loop only.
"""

from __future__ import annotations

import base64
import itertools
import json
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from streamvox.codecs.formats import FormatError, OutputFormat, resolve_format
from streamvox.codecs.pcm import s16_to_alaw, s16_to_mulaw
from streamvox.engine.api import SynthesisParams, UnknownVoiceError, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.conversation import Conversation
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.quotas import QuotaExceeded, Usage
from streamvox.stream_server.text_checks import text_problem
from streamvox.stream_server.timeline import TimedWord
from streamvox.stream_server.transport import Transport
from streamvox.stream_server.voice_names import VoiceCatalog, resolve_voice

ENCODINGS = ("pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw")
SPEEDS = {"slowest": 0.6, "slow": 0.8, "normal": 1.0, "fast": 1.2, "fastest": 1.4}
"""Cartesia's named speeds as multipliers (``generation_config.speed`` may also be a number 0.6-1.5)."""
_ids = itertools.count(1)


class CartesiaError(Exception):
    """A request Cartesia would refuse: an ``error`` message for its context."""

    def __init__(self, message: str, context_id: str | None, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.body = {
            "type": "error",
            "context_id": context_id,
            "done": True,
            "status_code": status,
            "title": "Invalid request" if status < 500 else "Server error",
            "message": message,
            "error_code": code,
        }


@dataclass
class _ContextState:
    encoding: str
    timestamps: bool
    flush_id: int = 0
    flushes: list[tuple[int, int]] = field(default_factory=list)
    """Flushes not yet answered: their id and the last segment they released."""
    started_at: float = field(default_factory=time.monotonic)
    first_chunk: bool = True


class CartesiaSession:
    """Serves one Cartesia socket.  Event-loop only."""

    def __init__(
        self,
        transport: Transport,
        engine: EngineClient,
        voices: VoiceCatalog,
        config: ServerConfig,
        metrics: Metrics,
        usage: Usage | None = None,
    ) -> None:
        self.id = f"c{next(_ids)}"
        self.transport = transport
        self.voices = voices
        self.config = config
        self.metrics = metrics
        self.conversation = Conversation(
            self.id, engine, config, metrics, self, lambda: transport.last_write, lambda _ctx: transport.abort(), usage
        )
        self._state: dict[str, _ContextState] = {}
        self._cancelled: set[str] = set()
        self.draining = False

    async def run(self) -> None:
        self.conversation.start()
        try:
            async for frame in self.transport:
                if frame.kind == "binary":
                    self._error(CartesiaError("Binary frames are not accepted; send JSON text.", None))
                    continue
                if frame.kind != "text":
                    break
                assert isinstance(frame.data, str)
                try:
                    self._handle(_parse(frame.data))
                except CartesiaError as exc:
                    self._error(exc)
        finally:
            await self.conversation.close()

    def _error(self, exc: CartesiaError) -> None:
        self.metrics.errors.labels(f"cartesia_{exc.body['error_code']}").inc()
        self.conversation.post(lambda: self._send(exc.body))

    def _handle(self, message: dict[str, Any]) -> None:
        cid = message.get("context_id")
        if cid is not None and (not isinstance(cid, str) or not cid or len(cid) > 128):
            raise CartesiaError("context_id must be a non-empty string.", None)
        if message.get("cancel") is True:
            if cid is None:
                raise CartesiaError("cancel needs a context_id.", None)
            ctx = self.conversation.contexts.get(cid)
            self._cancelled.add(cid)
            if ctx is not None and ctx.open:
                self.conversation.cancel(ctx, "client")
            return
        cid = cid or f"ctx-{next(_ids)}"
        transcript = message.get("transcript")
        if not isinstance(transcript, str):
            raise CartesiaError("transcript must be a string.", cid)
        if (problem := text_problem(transcript)) is not None:
            raise CartesiaError(problem, cid)
        now = time.monotonic()
        ctx = self.conversation.contexts.get(cid)
        if ctx is None or not ctx.open:
            if ctx is not None:
                self.conversation.retire(ctx)
            ctx = self._open(cid, message)
        elif not ctx.speaking:
            raise CartesiaError(f"Context {cid} has already finished; use a new context_id.", cid)
        if ctx.segmenter.total_chars + len(transcript) > self.config.max_context_chars:
            raise CartesiaError(f"A context may hold {self.config.max_context_chars} characters.", cid)
        if transcript:
            try:
                ctx.push_text(transcript, now)
            except QuotaExceeded as exc:
                self.conversation.cancel(ctx, "rate_limited")
                raise CartesiaError(f"{exc.message}.", cid, 429, "rate_limited") from None
        if message.get("continue") is not True:
            ctx.end(now)
        elif message.get("flush") is True:
            ctx.flush(now)
            state = self._state[cid]
            state.flush_id += 1
            if ctx.segments_finished >= ctx.next_index:
                flush_id = state.flush_id
                self.conversation.post(lambda: self._flush_done(ctx, flush_id))
            else:  # answered once the audio of everything flushed has been sent
                state.flushes.append((state.flush_id, ctx.next_index - 1))

    def _open(self, cid: str, message: dict[str, Any]) -> Context:
        if len(self.conversation.open_contexts()) >= self.config.max_contexts:
            raise CartesiaError(f"At most {self.config.max_contexts} contexts may be open at once.", cid, 429,
                                "too_many_contexts")  # fmt: skip
        if self.draining:
            raise CartesiaError("The server is shutting down.", cid, 503, "server_draining")
        voice = self._voice(message.get("voice"), cid)
        fmt, encoding = self._format(message.get("output_format"), voice, cid)
        params = self._params(message, voice, cid)
        for finished in self.conversation.finished_contexts():
            self.conversation.retire(finished)
            self._state.pop(finished.id, None)
        self._cancelled.discard(cid)
        self._state[cid] = _ContextState(encoding, message.get("add_timestamps") is True)
        timestamps = "word" if message.get("add_timestamps") is True else "none"
        return self.conversation.open_context(cid, voice, fmt, params, timestamps)

    def _voice(self, spec: Any, cid: str) -> Voice:
        if not isinstance(spec, dict) or spec.get("mode", "id") != "id" or not isinstance(spec.get("id"), str):
            raise CartesiaError('voice must be {"mode": "id", "id": ...}.', cid)
        try:
            return resolve_voice(self.voices, spec["id"], self.config.aliases)
        except UnknownVoiceError:
            raise CartesiaError(f"Voice {spec['id']} not found.", cid, 404, "voice_not_found") from None

    def _format(self, spec: Any, voice: Voice, cid: str) -> tuple[OutputFormat, str]:
        if not isinstance(spec, dict):
            raise CartesiaError("output_format is required.", cid)
        if spec.get("container", "raw") != "raw":
            raise CartesiaError("Only the raw container is offered on the WebSocket.", cid)
        encoding = spec.get("encoding")
        if encoding not in ENCODINGS:
            raise CartesiaError(f"encoding must be one of {', '.join(ENCODINGS)}.", cid)
        rate = spec.get("sample_rate")
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise CartesiaError("sample_rate must be an integer.", cid)
        try:
            return resolve_format("pcm_s16le", rate, voice.sample_rate), encoding
        except FormatError as exc:
            raise CartesiaError(str(exc), cid) from None

    def _params(self, message: dict[str, Any], voice: Voice, cid: str) -> SynthesisParams:
        seed = self.config.default_seed
        config = message.get("generation_config") or {}
        speed = config.get("speed") if isinstance(config, dict) else None
        if speed is None:
            speed = message.get("speed")
        if speed is None:
            return SynthesisParams(seed=seed)
        if isinstance(speed, str):
            if speed not in SPEEDS:
                raise CartesiaError(f"speed must be one of {', '.join(SPEEDS)} or a number.", cid)
            speed = SPEEDS[speed]
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.6 <= speed <= 1.5:
            raise CartesiaError("speed must be between 0.6 and 1.5.", cid)
        if "speed" not in voice.honours:
            return SynthesisParams(seed=seed)
        return SynthesisParams(length_scale=voice.length_scale / float(speed), seed=seed)

    async def drain(self, timeout: float) -> None:
        """Shutdown: open contexts get ``timeout`` seconds, then are cut; close 1001."""
        self.draining = True
        await self.conversation.drain(timeout)
        await self.transport.close(1001, b"server shutting down")

    # --- the presenter -------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        if not self.transport.closed:
            await self.transport.send_text(json.dumps(message, separators=(",", ":")))

    async def _flush_done(self, ctx: Context, flush_id: int) -> None:
        if ctx.id in self._cancelled:
            return
        await self._send({"type": "flush_done", "context_id": ctx.id, "done": False, "flush_done": True,
                          "flush_id": flush_id, "status_code": 206})  # fmt: skip

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """Cartesia has no segment events."""

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        state = self._state.get(ctx.id)
        if state is None or not state.timestamps or not words:
            return
        text = ctx.segmenter.text
        await self._send({
            "type": "timestamps", "context_id": ctx.id, "done": False, "status_code": 206,
            "word_timestamps": {
                "words": [text[w.char_start : w.char_end] for w in words],
                "start": [round(w.start_s, 3) for w in words],
                "end": [round(w.end_s, 3) for w in words],
            },
        })  # fmt: skip

    def corked(self) -> AbstractContextManager[None]:
        return self.transport.corked()

    async def audio(self, ctx: Context, payload: bytes) -> None:
        if ctx.cancel_requested:
            return  # not even the fade: Cartesia sends nothing for a context after its cancel
        state = self._state[ctx.id]
        step_ms = round((time.monotonic() - state.started_at) * 1000, 1) if state.first_chunk else 0.0
        state.first_chunk = False
        data = _encode(payload, state.encoding)
        message = {"type": "chunk", "context_id": ctx.id, "data": base64.b64encode(data).decode(), "done": False,
                   "status_code": 206, "step_time": step_ms}  # fmt: skip
        if state.flush_id:
            message["flush_id"] = state.flush_id
        await self._send(message)

    async def segment_finished(self, ctx: Context, index: int) -> None:
        state = self._state.get(ctx.id)
        while state is not None and state.flushes and state.flushes[0][1] <= index:
            flush_id, _ = state.flushes.pop(0)
            await self._flush_done(ctx, flush_id)

    async def done(self, ctx: Context, done: StreamDone) -> None:
        await self._send({"type": "done", "context_id": ctx.id, "done": True, "status_code": 200})

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        """A cancelled context gets nothing more (Cartesia's behaviour)."""

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        await self._send(CartesiaError(message, ctx.id, 500, code).body)


def _encode(payload: bytes, encoding: str) -> bytes:
    """Our 16-bit PCM as the requested raw encoding (same rate)."""
    if encoding == "pcm_s16le":
        return payload
    samples = np.frombuffer(payload, dtype="<i2")
    if encoding == "pcm_f32le":
        return (samples.astype("<f4") / 32768.0).tobytes()
    if encoding == "pcm_mulaw":
        return s16_to_mulaw(samples).tobytes()
    return s16_to_alaw(samples).tobytes()


def _parse(data: str) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        raise CartesiaError("Invalid JSON.", None) from None
    if not isinstance(message, dict):
        raise CartesiaError("Messages must be JSON objects.", None)
    return message

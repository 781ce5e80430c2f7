"""The ElevenLabs dialect's routes: its two WebSockets, its HTTP speech, its voice list.

Everything is served under ``/v1/…`` where it does not clash with our own
routes, and all of it also under ``/elevenlabs/v1/…`` (an SDK's base URL
``http://host:port/elevenlabs``), where ``GET /elevenlabs/v1/voices`` gives
ElevenLabs' shape of our voice list (``/v1/voices`` is ours).

Keys: the ``xi-api-key`` header, ``Authorization: Bearer``, the
``authorization``, ``xi_api_key`` or ``single_use_token`` query parameter, or
(sockets only) ``xi_api_key`` in the first message.  Refusals: HTTP 401
``invalid_api_key``, 403 ``missing_permissions``, 429
``too_many_concurrent_requests`` / ``quota_exceeded``; on a socket the same
codes in ElevenLabs' error message, then close 1008.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from streamvox.codecs.formats import FormatError, OutputFormat
from streamvox.engine.api import SynthesisParams, UnknownVoiceError, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.auth import AuthRefusal, CredentialSources, Grant
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.dialects.elevenlabs.alignment import AlignmentQueue
from streamvox.stream_server.dialects.elevenlabs.formats import CONTENT_TYPES, DEFAULT_FORMAT, elevenlabs_format
from streamvox.stream_server.dialects.elevenlabs.session import (
    DEFAULT_INACTIVITY_S,
    MAX_INACTIVITY_S,
    SPEED_RANGE,
    ElevenLabsError,
    ElevenLabsSession,
    SocketSettings,
)
from streamvox.stream_server.http_speech import HttpSpeech, ResponseWriter
from streamvox.stream_server.quotas import QuotaExceeded
from streamvox.stream_server.routes import HttpRequest, HttpResponse, HttpRoute, SocketRequest, SocketRoute, send_json
from streamvox.stream_server.routes import add_routes as add_dialect_routes
from streamvox.stream_server.runtime import Admission, Refusal, ServerRuntime
from streamvox.stream_server.text_checks import text_problem
from streamvox.stream_server.timeline import TimedWord, char_alignment
from streamvox.stream_server.transport import Incoming, Prepended, Transport
from streamvox.stream_server.voice_names import VoiceCatalog, resolve_voice

PREFIXES = ("", "/elevenlabs")
CREDENTIALS = CredentialSources(headers=("xi-api-key",), bearer=True,
                                query=("authorization", "xi_api_key", "single_use_token"))  # fmt: skip
MAX_HTTP_TEXT = 10_000


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @property
    def body(self) -> dict[str, Any]:
        return {"detail": {"status": self.code, "message": self.message}}

    async def send(self, response: HttpResponse) -> None:
        await send_json(response, self.status, self.body)


def _voice(voices: VoiceCatalog, runtime: ServerRuntime, voice_id: str) -> Voice:
    try:
        return resolve_voice(voices, voice_id, runtime.config.aliases)
    except UnknownVoiceError:
        raise _HttpError(404, "voice_not_found", f"A voice with the voice_id {voice_id} was not found.") from None


def _format(runtime: ServerRuntime, name: str, voice: Voice) -> OutputFormat:
    try:
        return elevenlabs_format(name, voice.sample_rate, runtime.config.opus)
    except FormatError as exc:
        raise _HttpError(422, "invalid_output_format", str(exc)) from None


async def _serve_socket(transport: Transport, runtime: ServerRuntime, request: SocketRequest, multi: bool) -> None:
    config = runtime.config
    outcome = request.outcome
    if isinstance(outcome, AuthRefusal) and outcome.missing:  # the key may be in the first message
        first, key = await _first_message_key(transport, DEFAULT_INACTIVITY_S)
        outcome = runtime.access.check(key, "elevenlabs")
        if first is not None:
            transport = Prepended(first, transport)
    admission = runtime.admit(outcome)
    if isinstance(admission, Refusal):  # admit() counted it
        await _refuse_socket(transport, _refusal_error(admission.kind, admission.message))
        return
    with admission:
        try:
            voice = _voice(admission.voices, runtime, request.path_params["voice_id"])
            fmt = _format(runtime, request.query.get("output_format", DEFAULT_FORMAT), voice)
            inactivity = _inactivity(request.query.get("inactivity_timeout"))
        except _HttpError as exc:
            runtime.metrics.errors.labels(f"elevenlabs_{exc.code}").inc()
            await _refuse_socket(transport, exc)
            return
        settings = SocketSettings(voice, fmt, inactivity, multi, config.default_seed)
        session = ElevenLabsSession(transport, runtime.engine_client, config, runtime.metrics, settings,
                                    admission.usage)  # fmt: skip
        await runtime.serve(session, session.run)


async def serve_stream_input(transport: Transport, runtime: ServerRuntime, request: SocketRequest) -> None:
    """``…/stream-input``: one context per socket."""
    await _serve_socket(transport, runtime, request, multi=False)


async def serve_multi_stream_input(transport: Transport, runtime: ServerRuntime, request: SocketRequest) -> None:
    """``…/multi-stream-input``: contexts named by ``context_id``."""
    await _serve_socket(transport, runtime, request, multi=True)


SOCKETS = tuple(
    SocketRoute(f"{prefix}/v1/text-to-speech/{{voice_id}}/{name}", "elevenlabs", CREDENTIALS, serve)
    for prefix in PREFIXES
    for name, serve in (("stream-input", serve_stream_input), ("multi-stream-input", serve_multi_stream_input))
)


async def _speech(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse, timestamps: bool) -> None:
    admission = runtime.admit(request.outcome)
    if isinstance(admission, Refusal):
        await _refusal_error(admission.kind, admission.message).send(response)
        return
    with admission:
        await _speak(runtime, request, response, admission, timestamps)


async def _speak(
    runtime: ServerRuntime, request: HttpRequest, response: HttpResponse, admission: Admission, timestamps: bool
) -> None:
    try:
        voice = _voice(admission.voices, runtime, request.path_params["voice_id"])
        fmt = _format(runtime, request.query.get("output_format", DEFAULT_FORMAT), voice)
        text, speed = _speech_body(await request.read())
        if admission.usage is not None:
            try:
                admission.usage.take_text(len(text))
            except QuotaExceeded as exc:
                raise _HttpError(429, "quota_exceeded", f"{exc.message}.") from None
    except _HttpError as exc:
        runtime.metrics.errors.labels(f"elevenlabs_{exc.code}").inc()
        await exc.send(response)
        return
    await response.start(200, "application/json" if timestamps else CONTENT_TYPES[fmt.codec])
    holder: list[HttpSpeech] = []
    presenter = _SpeechPresenter(response, timestamps, lambda: holder[0].gone())
    job = HttpSpeech(runtime, presenter, lambda: presenter.last_write, response.drop, admission.usage)
    holder.append(job)
    params = SynthesisParams(seed=runtime.config.default_seed)
    if speed is not None and "speed" in voice.honours:
        params = SynthesisParams(length_scale=voice.length_scale / speed, seed=runtime.config.default_seed)

    async def run() -> None:
        await job.run(voice, fmt, params, text, "char" if timestamps else "none")

    await runtime.serve(job, run)
    if not presenter.gone:
        await presenter.flush_tail()
        await presenter.finish()


async def stream(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``POST …/stream``: the audio bytes as they are made."""
    await _speech(runtime, request, response, timestamps=False)


async def with_timestamps(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``POST …/stream/with-timestamps``: NDJSON lines of audio and character timings."""
    await _speech(runtime, request, response, timestamps=True)


async def voices(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``GET /elevenlabs/v1/voices``: ElevenLabs' shape of the voices this caller may use, and the aliases."""
    grant = request.outcome
    assert isinstance(grant, Grant)  # refusals were answered before the route ran
    listed = [
        {"voice_id": v.id, "name": v.id, "category": "premade", "labels": {"language": v.language},
         "fine_tuning": {"language": v.language}, "available_for_tiers": [], "settings": None}
        for v in runtime.voices_for(grant).infos()
    ]  # fmt: skip
    aliases = [
        {"voice_id": name, "name": name, "category": "premade", "labels": {"alias_of": target}}
        for name, target in runtime.config.voice_aliases
    ]
    await send_json(response, 200, {"voices": listed + aliases})


def _http_refusal(refusal: AuthRefusal) -> tuple[int, Any]:
    error = _refusal_error(refusal.kind, refusal.message)
    return error.status, error.body


def _http_routes() -> list[HttpRoute]:
    routes = []
    for prefix in PREFIXES:
        base = f"{prefix}/v1/text-to-speech/{{voice_id}}"
        for path, serve in ((f"{base}/stream", stream), (f"{base}/stream/with-timestamps", with_timestamps),
                            (base, stream), (f"{base}/with-timestamps", with_timestamps)):  # fmt: skip
            routes.append(HttpRoute("POST", path, "elevenlabs", CREDENTIALS, serve, _http_refusal))
    routes.append(HttpRoute("GET", "/elevenlabs/v1/voices", "elevenlabs", CREDENTIALS, voices, _http_refusal))
    return routes


ROUTES: tuple[SocketRoute | HttpRoute, ...] = (*SOCKETS, *_http_routes())


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    add_dialect_routes(app, runtime, ROUTES)


_REFUSALS = {
    "unauthorized": (401, "invalid_api_key"),
    "forbidden": (403, "missing_permissions"),
    "rate_limited": (429, "too_many_concurrent_requests"),
    "overloaded": (429, "too_many_concurrent_requests"),
    "draining": (503, "server_draining"),
}


def _refusal_error(kind: str, message: str) -> _HttpError:
    status, code = _REFUSALS[kind]
    return _HttpError(status, code, f"{message[:1].upper()}{message[1:]}.")


async def _refuse_socket(transport: Transport, error: _HttpError) -> None:
    """ElevenLabs' socket error message, then close 1008."""
    await transport.send_text(json.dumps(ElevenLabsError(error.code, error.message).body()))
    await transport.close(1008, error.code.encode())


async def _first_message_key(transport: Transport, timeout: float) -> tuple[Incoming | None, str | None]:
    """Read the socket's first frame for a key in it (``xi_api_key``); the frame is handed on."""
    frames = aiter(transport)
    try:
        first = await asyncio.wait_for(anext(frames), timeout)
    except (TimeoutError, StopAsyncIteration):
        return None, None
    finally:
        await frames.aclose()  # type: ignore[attr-defined]  # an async generator
    if first.kind != "text" or not isinstance(first.data, str):
        return (first, None) if first.kind == "binary" else (None, None)
    try:
        raw = json.loads(first.data)
    except (json.JSONDecodeError, RecursionError):
        raw = None
    key = raw.get("xi_api_key", raw.get("xi-api-key")) if isinstance(raw, dict) else None
    return first, key if isinstance(key, str) else None


def _inactivity(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_INACTIVITY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= MAX_INACTIVITY_S:
        raise _HttpError(422, "invalid_inactivity_timeout", f"inactivity_timeout must be in (0, {MAX_INACTIVITY_S:g}]")
    return value


def _speech_body(body: bytes) -> tuple[str, float | None]:
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise _HttpError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("text"), str):
        raise _HttpError(422, "invalid_text", "The body needs a 'text' string.")
    text = raw["text"]
    if not text.strip():
        raise _HttpError(422, "invalid_text", "'text' must not be empty.")
    if (problem := text_problem(text)) is not None:
        raise _HttpError(422, "invalid_text", problem)
    if len(text) > MAX_HTTP_TEXT:
        raise _HttpError(422, "text_too_long", f"'text' is longer than {MAX_HTTP_TEXT} characters.")
    settings = raw.get("voice_settings") or {}
    speed = settings.get("speed") if isinstance(settings, dict) else None
    if speed is not None:
        low, high = SPEED_RANGE
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not low <= speed <= high:
            raise _HttpError(422, "invalid_voice_settings", f"voice_settings.speed must be between {low} and {high}.")
        speed = float(speed)
    return text, speed


class _SpeechPresenter(ResponseWriter):
    """Audio bytes as they are made, or (``with-timestamps``) NDJSON lines of base64 audio with
    the characters spoken in it (``characters``, ``character_start_times_seconds``,
    ``character_end_times_seconds``: seconds from the start of the whole audio)."""

    def __init__(self, response: HttpResponse, timestamps: bool, on_gone: Callable[[], None]) -> None:
        super().__init__(response, on_gone)
        self.timestamps = timestamps
        self._alignment = AlignmentQueue()

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """No segment events over HTTP."""

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        if not self.timestamps:
            return
        span, _ = ctx.segments[index]
        start_s = ctx.segment_start_s(index)
        self._alignment.add(ctx.segmenter.text, char_alignment(span.text, span.start, words, start_s))

    def _line(self, payload: bytes) -> bytes:
        alignment = self._alignment.take_absolute()
        line = {"audio_base64": base64.b64encode(payload).decode(), "alignment": alignment,
                "normalized_alignment": alignment}  # fmt: skip
        return json.dumps(line, separators=(",", ":")).encode() + b"\n"

    async def audio(self, ctx: Context, payload: bytes) -> None:
        await self.write(self._line(payload) if self.timestamps else payload)

    async def flush_tail(self) -> None:
        """Characters timed after the last audio (an estimate at a segment's end) still go out."""
        if self.timestamps and self._alignment.chars:
            await self.write(self._line(b""))

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Nothing to say when a segment ends."""

    async def done(self, ctx: Context, done: StreamDone) -> None:
        """The response ends when the handler returns."""

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        """The client left (or the server shut down)."""

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        """Headers are out: a failure ends the stream early."""

"""OpenAI's ``POST /v1/audio/speech``: the request, its formats, and the streamed response.

The request body is OpenAI's (``model``, ``input``, ``voice``, ``response_format``,
``speed``, ``instructions``, ``stream_format``), checked the way OpenAI checks it,
with its error shape (``{"error": {"message", "type", "param", "code"}}``).  The
audio streams as it is generated: raw bytes of the format, or with
``stream_format: "sse"`` server-sent events ``speech.audio.delta`` (base64 audio)
then ``speech.audio.done``.  Event-loop only.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamvox.codecs.formats import OutputFormat, resolve_format
from streamvox.engine.api import SynthesisParams, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.http_speech import ResponseWriter
from streamvox.stream_server.routes import HttpResponse, send_json
from streamvox.stream_server.text_checks import text_problem
from streamvox.stream_server.timeline import TimedWord

MAX_INPUT_CHARS = 4096
OPENAI_RATE = 24000
"""OpenAI's speech is 24 kHz; ours is resampled to it (Opus: 48 kHz, as Ogg/Opus always is)."""
FORMATS: dict[str, tuple[str, int, str]] = {
    "mp3": ("mp3", OPENAI_RATE, "audio/mpeg"),
    "opus": ("ogg_opus", 48000, "audio/ogg"),
    "flac": ("flac", OPENAI_RATE, "audio/flac"),
    "wav": ("wav", OPENAI_RATE, "audio/wav"),
    "pcm": ("pcm_s16le", OPENAI_RATE, "audio/pcm"),
}
"""``response_format`` -> our codec, its rate, and the Content-Type OpenAI sends."""
REFUSED_FORMATS = {"aac": "aac is not offered by this server (no AAC encoder is bundled); use mp3 or opus"}


class OpenAIError(Exception):
    """A request OpenAI would refuse, with its status and error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": kind, "param": param, "code": None}}

    async def send(self, response: HttpResponse) -> None:
        await send_json(response, self.status, self.body)


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice_name: str
    response_format: str
    speed: float | None
    sse: bool


def parse_request(body: bytes) -> SpeechRequest:
    """The body of a speech request, validated; raises :class:`OpenAIError`."""
    try:
        raw = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise OpenAIError("We could not parse the JSON body of your request.") from None
    if not isinstance(raw, dict):
        raise OpenAIError("The request body must be a JSON object.")
    if not isinstance(raw.get("model"), str) or not raw["model"]:
        raise OpenAIError("you must provide a model parameter", "model")
    text = raw.get("input")
    if not isinstance(text, str):
        raise OpenAIError("Missing required parameter: 'input'.", "input")
    if (problem := text_problem(text)) is not None:
        raise OpenAIError(f"'input' is invalid: {problem}.", "input")
    if len(text) > MAX_INPUT_CHARS:
        raise OpenAIError(f"'input' is too long: {len(text)} characters, the maximum is {MAX_INPUT_CHARS}.", "input")
    voice = raw.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        raise OpenAIError("Missing required parameter: 'voice'.", "voice")
    response_format = raw.get("response_format", "mp3")
    if response_format in REFUSED_FORMATS:
        raise OpenAIError(REFUSED_FORMATS[response_format], "response_format")
    if response_format not in FORMATS:
        allowed = ", ".join([*FORMATS, *REFUSED_FORMATS])
        raise OpenAIError(f"Invalid value: '{response_format}'. Supported values are: {allowed}.", "response_format")
    speed = raw.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise OpenAIError("'speed' must be a number from 0.25 to 4.0.", "speed")
        speed = float(speed)
    stream_format = raw.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        message = f"Invalid value: '{stream_format}'. Supported values are: 'sse' and 'audio'."
        raise OpenAIError(message, "stream_format")
    if raw.get("instructions") is not None and not isinstance(raw["instructions"], str):
        raise OpenAIError("'instructions' must be a string.", "instructions")
    return SpeechRequest(text, voice, response_format, speed, stream_format == "sse")


def output_format(request: SpeechRequest, voice: Voice) -> tuple[OutputFormat, str]:
    codec, rate, content_type = FORMATS[request.response_format]
    return resolve_format(codec, rate, voice.sample_rate), content_type


def synthesis_params(request: SpeechRequest, voice: Voice, seed: int | None) -> SynthesisParams:
    """Speed where the voice honours it; ignored where it does not, as OpenAI ignores it for
    the models that have no speed control.  ``seed``: the server's default seed."""
    if request.speed is None or "speed" not in voice.honours:
        return SynthesisParams(seed=seed)
    return SynthesisParams(length_scale=voice.length_scale / request.speed, seed=seed)


class SpeechPresenter(ResponseWriter):
    """Writes one context's audio into the HTTP response, raw or as server-sent events."""

    def __init__(self, response: HttpResponse, sse: bool, on_gone: Callable[[], None]) -> None:
        super().__init__(response, on_gone)
        self.sse = sse

    async def _event(self, event: dict[str, Any]) -> None:
        await self.write(b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n")

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """OpenAI sends no segment events."""

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        """OpenAI sends no timings."""

    async def audio(self, ctx: Context, payload: bytes) -> None:
        if self.sse:
            await self._event({"type": "speech.audio.delta", "audio": base64.b64encode(payload).decode()})
        else:
            await self.write(payload)

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Nothing to say when a segment ends."""

    async def done(self, ctx: Context, done: StreamDone) -> None:
        if self.sse:
            words = len(ctx.segmenter.text.split())
            seconds = round(ctx.seconds_sent, 3)
            # No tokens here: usage counts the input's words and the audio's seconds (documented).
            usage = {"input_tokens": words, "output_tokens": 0, "total_tokens": words, "audio_seconds": seconds}
            await self._event({"type": "speech.audio.done", "usage": usage})

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        """The client left (or the server shut down): nothing more to write."""

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        """Headers are out: a failure can only end the stream early (SSE clients get an error event)."""
        if self.sse:
            await self._event({"type": "error", "error": {"message": message, "type": "server_error", "code": code}})

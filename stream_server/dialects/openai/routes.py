"""The OpenAI dialect's route: ``POST /v1/audio/speech`` (see ``speech.py`` and docs/dialects.md).

Keys: ``Authorization: Bearer``, as OpenAI's clients send them.  Refusals are
OpenAI's error bodies: 401 ``invalid_api_key``, 403 ``permission_error``, 429
``rate_limit_error`` (a key's limit, or the server at capacity), 503 draining.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from streamvox.engine.api import UnknownVoiceError
from streamvox.stream_server.auth import AuthRefusal, CredentialSources
from streamvox.stream_server.dialects.openai.speech import (
    OpenAIError,
    SpeechPresenter,
    output_format,
    parse_request,
    synthesis_params,
)
from streamvox.stream_server.http_speech import HttpSpeech
from streamvox.stream_server.quotas import QuotaExceeded
from streamvox.stream_server.routes import HttpRequest, HttpResponse, HttpRoute
from streamvox.stream_server.routes import add_routes as add_dialect_routes
from streamvox.stream_server.runtime import Admission, Refusal, RefusalKind, ServerRuntime
from streamvox.stream_server.voice_names import OPENAI_VOICES, resolve_voice

SPEECH_PATH = "/v1/audio/speech"
CREDENTIALS = CredentialSources(bearer=True)
_ERRORS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "invalid_request_error"),
    "forbidden": (403, "permission_error"),
    "rate_limited": (429, "rate_limit_error"),
    "overloaded": (429, "rate_limit_error"),
    "draining": (503, "server_error"),
}


async def speech(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse) -> None:
    """``POST /v1/audio/speech``: admission, the request, then the audio as it is made."""
    admission = runtime.admit(request.outcome)
    if isinstance(admission, Refusal):
        await _refusal_error(admission.kind, admission.message).send(response)
        return
    with admission:
        await _speak(runtime, request, response, admission)


async def _speak(runtime: ServerRuntime, request: HttpRequest, response: HttpResponse, admission: Admission) -> None:
    voices = admission.voices
    try:
        spoken = parse_request(await request.read())
        try:
            voice = resolve_voice(voices, spoken.voice_name, runtime.config.aliases, OPENAI_VOICES)
        except UnknownVoiceError:
            known = ", ".join([*OPENAI_VOICES, *voices.ids()])
            raise OpenAIError(f"Unknown voice '{spoken.voice_name}'. Available: {known}.", "voice") from None
        fmt, content_type = output_format(spoken, voice)
        if admission.usage is not None:
            admission.usage.take_text(len(spoken.text))
    except QuotaExceeded as exc:
        runtime.metrics.errors.labels("rate_limited").inc()
        await _refusal_error("rate_limited", exc.message).send(response)
        return
    except OpenAIError as exc:
        runtime.metrics.errors.labels(f"openai_{exc.status}").inc()
        await exc.send(response)
        return
    await response.start(200, "text/event-stream" if spoken.sse else content_type)
    holder: list[HttpSpeech] = []
    presenter = SpeechPresenter(response, spoken.sse, lambda: holder[0].gone())
    job = HttpSpeech(runtime, presenter, lambda: presenter.last_write, response.drop, admission.usage)
    holder.append(job)
    params = synthesis_params(spoken, voice, runtime.config.default_seed)

    async def run() -> None:
        await job.run(voice, fmt, params, spoken.text)

    await runtime.serve(job, run)
    if not presenter.gone:
        await presenter.finish()


def _refusal_error(kind: RefusalKind, message: str) -> OpenAIError:
    status, error_type = _ERRORS[kind]
    error = OpenAIError(f"{message[:1].upper()}{message[1:]}.", None, status, error_type)
    if kind == "unauthorized":
        error.body["error"]["code"] = "invalid_api_key"
    return error


def _http_refusal(refusal: AuthRefusal) -> tuple[int, Any]:
    error = _refusal_error(refusal.kind, refusal.message)
    return error.status, error.body


ROUTES = (HttpRoute("POST", SPEECH_PATH, "openai", CREDENTIALS, speech, _http_refusal),)


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    add_dialect_routes(app, runtime, ROUTES)

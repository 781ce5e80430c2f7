"""The OpenAI dialect's route: ``POST /v1/audio/speech`` (see ``speech.py`` and docs/dialects.md)."""

from __future__ import annotations

from aiohttp import web
from streamvox.engine.api import UnknownVoiceError
from streamvox.stream_server.dialects.openai.speech import (
    OpenAIError,
    SpeechPresenter,
    output_format,
    parse_request,
    synthesis_params,
)
from streamvox.stream_server.http_speech import HttpSpeech
from streamvox.stream_server.runtime import ServerRuntime
from streamvox.stream_server.voice_names import OPENAI_VOICES, resolve_voice

SPEECH_PATH = "/v1/audio/speech"


def add_routes(app: web.Application, runtime: ServerRuntime) -> None:
    async def speech(request: web.Request) -> web.StreamResponse:
        try:
            spoken = parse_request(await request.read())
            try:
                voice = resolve_voice(runtime.voices, spoken.voice_name, runtime.config.aliases, OPENAI_VOICES)
            except UnknownVoiceError:
                known = ", ".join([*OPENAI_VOICES, *runtime.voices.ids()])
                raise OpenAIError(f"Unknown voice '{spoken.voice_name}'. Available: {known}.", "voice") from None
            fmt, content_type = output_format(spoken, voice)
            refusal = runtime.refusal()
            if refusal == "draining":
                raise OpenAIError("The server is shutting down; retry on another.", None, 503, "server_error")
            if refusal == "overloaded":
                runtime.metrics.sessions_rejected.inc()
                raise OpenAIError("The server is at capacity; retry later.", None, 429, "rate_limit_error")
        except OpenAIError as exc:
            runtime.metrics.errors.labels(f"openai_{exc.status}").inc()
            return exc.response()
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream" if spoken.sse else content_type}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        holder: list[HttpSpeech] = []
        presenter = SpeechPresenter(response, spoken.sse, lambda: holder[0].gone())
        job = HttpSpeech(runtime, presenter, lambda: presenter.last_write, request)
        holder.append(job)
        params = synthesis_params(spoken, voice, runtime.config.default_seed)

        async def run() -> None:
            await job.run(voice, fmt, params, spoken.text)

        await runtime.serve(job, run)
        if not presenter.gone:
            await response.write_eof()
        return response

    app.router.add_post(SPEECH_PATH, speech)

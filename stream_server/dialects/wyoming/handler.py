"""Wyoming (Home Assistant) over TCP: ``describe``, one-shot ``synthesize``, and streaming
``synthesize-start`` / ``-chunk`` / ``-stop``, onto our contexts.

A connection may ask for several utterances in turn, one at a time.  Streaming
chunks are raw text pieces that may cut words anywhere; they go straight to
the context's segmenter, which only cuts where the text after a boundary has
arrived.  Home Assistant also sends the whole text as a ``synthesize`` inside a
streaming request (for servers that cannot stream): it is ignored there.  Audio
is 16-bit mono PCM at the voice's rate: ``audio-start``, ``audio-chunk``s as
each window is made, ``audio-stop``, then (streaming) ``synthesize-stopped``.
Bad requests get a Wyoming ``error`` event; the connection lives on.
Wyoming has no authentication: bind it to loopback or a trusted LAN.
Event-loop only.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from contextlib import AbstractContextManager

from streamvox.codecs.formats import resolve_format
from streamvox.engine.api import SynthesisParams, UnknownVoiceError, Voice
from streamvox.engine.events import StreamDone
from streamvox.engine.text.segmenter import Span
from streamvox.stream_server.config import ServerConfig
from streamvox.stream_server.contexts import Context
from streamvox.stream_server.conversation import Conversation
from streamvox.stream_server.corking import corked
from streamvox.stream_server.engine_client import EngineClient
from streamvox.stream_server.metrics import Metrics
from streamvox.stream_server.text_checks import text_problem
from streamvox.stream_server.timeline import TimedWord
from streamvox.stream_server.voice_names import VoiceCatalog, resolve_voice
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

ATTRIBUTION = Attribution(name="streamvox", url="https://pypi.org/project/streamvox/")
_ids = itertools.count(1)


def describe(voices: VoiceCatalog, version: str) -> Info:
    """Our voices as one Wyoming TTS program that can stream."""
    listed = [
        TtsVoice(
            name=v.id,
            attribution=ATTRIBUTION,
            installed=True,
            description=f"{v.id} ({v.kind}, {v.sample_rate} Hz)",
            version=version,
            languages=[v.language],
        )
        for v in voices.infos()
    ]
    program = TtsProgram(
        name="streamvox",
        attribution=ATTRIBUTION,
        installed=True,
        description="streamvox streaming text to speech",
        version=version,
        voices=listed,
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


class WyomingHandler(AsyncEventHandler):
    """One Wyoming connection.  Event-loop only."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        engine: EngineClient,
        voices: VoiceCatalog,
        config: ServerConfig,
        metrics: Metrics,
        version: str,
    ) -> None:
        super().__init__(reader, writer)
        self.id = f"w{next(_ids)}"
        self.voices = voices
        self.config = config
        self.metrics = metrics
        self.version = version
        self.last_write = time.monotonic()
        self.conversation = Conversation(
            self.id, engine, config, metrics, self, lambda: self.last_write, lambda _ctx: writer.transport.abort()
        )
        self.conversation.start()
        self._streaming: Context | None = None
        self._started: set[str] = set()
        self._utterances = itertools.count(1)

    async def handle_event(self, event: Event) -> bool:
        try:
            if Describe.is_type(event.type):
                await self.write_event(describe(self.voices, self.version).event())
            elif SynthesizeStart.is_type(event.type):
                start = SynthesizeStart.from_event(event)
                self._streaming = self._open(start.voice.name if start.voice else None)
            elif SynthesizeChunk.is_type(event.type):
                if self._streaming is None:
                    raise _Refused("synthesize-chunk outside synthesize-start/stop", "out_of_order")
                self._push(self._streaming, SynthesizeChunk.from_event(event).text)
            elif SynthesizeStop.is_type(event.type):
                if self._streaming is None:
                    raise _Refused("synthesize-stop without synthesize-start", "out_of_order")
                ctx, self._streaming = self._streaming, None
                ctx.end(time.monotonic())
                await ctx.finished.wait()
                await self.conversation.flushed()
                await self.write_event(SynthesizeStopped().event())
            elif Synthesize.is_type(event.type):
                if self._streaming is not None:
                    return True  # the whole text again, for servers that cannot stream: ignored
                request = Synthesize.from_event(event)
                if not isinstance(request.text, str):
                    raise _Refused("synthesize needs a text string", "invalid_text")
                if (problem := text_problem(request.text)) is not None:
                    raise _Refused(problem, "invalid_text")
                ctx = self._open(request.voice.name if request.voice else None)
                self._push(ctx, request.text)
                ctx.end(time.monotonic())
                await ctx.finished.wait()
                await self.conversation.flushed()
        except _Refused as exc:
            self.metrics.errors.labels(f"wyoming_{exc.code}").inc()
            await self.write_event(Error(text=str(exc), code=exc.code).event())
        except (KeyError, TypeError, AttributeError, ValueError):  # the wyoming parsers on a malformed event
            self.metrics.errors.labels("wyoming_invalid_event").inc()
            await self.write_event(Error(text=f"malformed {event.type!r} event", code="invalid_event").event())
        return True

    def _open(self, voice_name: str | None) -> Context:
        if self._streaming is not None:
            raise _Refused("a streaming request is already open", "out_of_order")
        try:
            voice: Voice = resolve_voice(self.voices, voice_name, self.config.aliases)
        except UnknownVoiceError:
            raise _Refused(
                f"no voice {voice_name!r}; available: {', '.join(self.voices.ids())}", "unknown_voice"
            ) from None
        for finished in self.conversation.finished_contexts():
            self.conversation.retire(finished)
        fmt = resolve_format("pcm_s16le", None, voice.sample_rate)
        cid = f"u{next(self._utterances)}"
        return self.conversation.open_context(cid, voice, fmt, SynthesisParams(seed=self.config.default_seed))

    def _push(self, ctx: Context, text: str) -> None:
        if not isinstance(text, str):
            raise _Refused("text must be a string", "invalid_text")
        if (problem := text_problem(text)) is not None:
            raise _Refused(problem, "invalid_text")
        if ctx.segmenter.total_chars + len(text) > self.config.max_context_chars:
            raise _Refused(f"an utterance may hold {self.config.max_context_chars} characters", "text_too_long")
        ctx.push_text(text, time.monotonic())

    async def disconnect(self) -> None:
        await self.conversation.close()

    async def drain(self, timeout: float) -> None:
        """Shutdown: what is being spoken gets ``timeout`` seconds, then the connection ends."""
        await self.conversation.drain(timeout)
        await self.stop()

    # --- the presenter -------------------------------------------------------------------------

    async def _write(self, event: Event) -> None:
        await self.write_event(event)
        self.last_write = time.monotonic()

    def _audio_format(self, ctx: Context) -> tuple[int, int, int]:
        return ctx.encoder.format.sample_rate, 2, 1

    async def segment(self, ctx: Context, index: int, span: Span, start_sample: int) -> None:
        """Wyoming has no segment events."""

    async def words(self, ctx: Context, index: int, words: list[TimedWord], estimated: bool) -> None:
        """Wyoming has no timings."""

    async def audio(self, ctx: Context, payload: bytes) -> None:
        rate, width, channels = self._audio_format(ctx)
        if ctx.id not in self._started:
            self._started.add(ctx.id)
            await self._write(AudioStart(rate=rate, width=width, channels=channels).event())
        await self._write(AudioChunk(rate=rate, width=width, channels=channels, audio=payload).event())

    def corked(self) -> AbstractContextManager[None]:
        return corked(self.writer.transport)

    async def segment_finished(self, ctx: Context, index: int) -> None:
        """Nothing to say when a segment ends."""

    async def done(self, ctx: Context, done: StreamDone) -> None:
        rate, width, channels = self._audio_format(ctx)
        if ctx.id not in self._started:  # nothing speakable: still a (silent) stream
            await self._write(AudioStart(rate=rate, width=width, channels=channels).event())
        self._started.discard(ctx.id)
        await self._write(AudioStop().event())

    async def cancelled(self, ctx: Context, reason: str, played_ms: float | None) -> None:
        self._started.discard(ctx.id)
        await self._write(AudioStop().event())

    async def failed(self, ctx: Context, code: str, message: str) -> None:
        await self._write(Error(text=message, code=code).event())


class _Refused(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code

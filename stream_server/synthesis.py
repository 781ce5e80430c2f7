"""Offline synthesis through the same engine the server uses (``streamvox say``)."""

from __future__ import annotations

import queue
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from streamvox.codecs.formats import StreamEncoder, resolve_format
from streamvox.codecs.resample import StreamResampler
from streamvox.engine.api import SynthesisParams
from streamvox.engine.core import EngineCore
from streamvox.engine.events import AudioChunk, StreamAborted, StreamDone, StreamFailed
from streamvox.engine.text.segmenter import Segmenter, SegmenterConfig


class SynthesisError(RuntimeError):
    """The engine reported a failure for this text."""


@dataclass(frozen=True)
class SynthesisResult:
    audio: np.ndarray
    """float32 at the voice's sample rate."""
    sample_rate: int
    segments: list[str]
    compute_s: float


def synthesize(
    engine: EngineCore,
    voice_id: str | None,
    text: str,
    params: SynthesisParams | None = None,
    segmenter: SegmenterConfig | None = None,
    timeout_s: float = 600.0,
) -> SynthesisResult:
    """Speak ``text`` with voice ``voice_id`` (``None``: the default) through ``engine`` (started)
    and return the whole stream's audio."""
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    stream_id = f"say-{id(events)}"
    spans = Segmenter(segmenter or SegmenterConfig()).flush_text(text)
    voice = engine.open(stream_id, voice_id, params or SynthesisParams(), events.put)
    for index, span in enumerate(spans):
        engine.add_segment(stream_id, index, span.text, span.lead, span.preview)
    engine.finish(stream_id)
    chunks: list[np.ndarray] = []
    while True:
        event = events.get(timeout=timeout_s)
        if isinstance(event, AudioChunk):
            chunks.append(event.pcm)
        elif isinstance(event, StreamDone):
            audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
            return SynthesisResult(audio, voice.sample_rate, [s.text for s in spans], event.compute_s)
        elif isinstance(event, StreamFailed):
            raise SynthesisError(event.message)
        elif isinstance(event, StreamAborted):
            raise SynthesisError("engine stopped before the text was spoken")


def write_audio(result: SynthesisResult, path: Path, sample_rate: int | None = None) -> int:
    """Write ``.wav`` (PCM 16-bit) or ``.ogg``/``.opus`` (Ogg/Opus); return the samples written."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        rate = sample_rate or result.sample_rate
        resampler = StreamResampler(result.sample_rate, rate)
        audio = np.concatenate([resampler.process(result.audio), resampler.flush()])
        sf.write(str(path), audio, rate, subtype="PCM_16")
        return len(audio)
    if suffix in (".ogg", ".opus"):
        encoder = StreamEncoder(resolve_format("ogg_opus", None, result.sample_rate), result.sample_rate)
        with path.open("wb") as out:
            out.write(encoder.header() or b"")
            encoder.feed(result.audio)
            encoder.finish()
            while (page := encoder.pop()) is not None:
                out.write(page)
        return encoder.samples_out
    raise ValueError(f"unsupported output {path.name}: use .wav, .ogg or .opus")

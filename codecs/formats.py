"""Output formats and the per-stream encoder that turns model PCM into payloads.

``StreamEncoder`` is fed float32 PCM at the model's rate as windows finish and
hands out one payload at a time, so the caller can stop between any two
payloads (a cancel) and end on a short fade.  Not thread-safe: one per stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from streamvox.codecs.opus import OPUS_RATE, OpusFrameEncoder, OpusSettings
from streamvox.codecs.pcm import float_to_s16, float_to_s16le_bytes, s16_to_mulaw
from streamvox.codecs.resample import StreamResampler
from streamvox.codecs.wav import wav_header

CODECS = ("opus", "pcm_s16le", "wav", "mulaw_8000")
PCM_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
FADE_MS = 10


class FormatError(ValueError):
    """A requested output format or rate is not supported."""


@dataclass(frozen=True)
class OutputFormat:
    """What the client receives: codec, rate, channels and packet duration."""

    codec: str
    sample_rate: int
    channels: int = 1
    frame_ms: int | None = None
    """Opus packet duration; PCM formats send one chunk per vocoder window (``None``)."""
    opus: OpusSettings = field(default_factory=OpusSettings)

    def describe(self) -> dict[str, object]:
        """The JSON shape sent in the ``ready`` event."""
        return {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_ms": self.frame_ms,
            "container": "wav" if self.codec == "wav" else None,
        }


def resolve_format(
    codec: str, sample_rate: int | None, model_rate: int, opus: OpusSettings | None = None
) -> OutputFormat:
    """Validate a client's format request against what each codec can carry."""
    if codec not in CODECS:
        raise FormatError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if codec == "opus":
        if sample_rate not in (None, OPUS_RATE):
            raise FormatError(f"opus is sent at {OPUS_RATE} Hz only, not {sample_rate}")
        settings = opus or OpusSettings()
        return OutputFormat("opus", OPUS_RATE, frame_ms=settings.frame_ms, opus=settings)
    if codec == "mulaw_8000":
        if sample_rate not in (None, 8000):
            raise FormatError(f"mulaw_8000 is sent at 8000 Hz only, not {sample_rate}")
        return OutputFormat("mulaw_8000", 8000)
    rate = model_rate if sample_rate is None else sample_rate
    if rate not in PCM_RATES and rate != model_rate:
        raise FormatError(f"sample_rate {rate} not supported; use one of {PCM_RATES}")
    return OutputFormat(codec, rate)


class StreamEncoder:
    """Resamples model PCM to the output rate and cuts it into payloads."""

    def __init__(self, fmt: OutputFormat, model_rate: int) -> None:
        self.format = fmt
        self._resampler = StreamResampler(model_rate, fmt.sample_rate)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._finished = False
        self._opus = OpusFrameEncoder(fmt.opus) if fmt.codec == "opus" else None
        self.samples_out = 0
        """Real samples (output rate) handed out so far, padding excluded."""
        self.payloads_out = 0

    def header(self) -> bytes | None:
        """The bytes to send before any audio (a streaming WAV header), if the format has one."""
        if self.format.codec == "wav":
            return wav_header(self.format.sample_rate)
        return None

    def feed(self, pcm: np.ndarray) -> None:
        """Add float32 samples at the model rate."""
        if self._finished:
            raise ValueError("feed after finish")
        out = self._resampler.process(pcm)
        if len(out):
            self._buffer = np.concatenate([self._buffer, out]) if len(self._buffer) else out

    def finish(self) -> None:
        """No more input: drain the resampler; the last Opus frame will be zero-padded."""
        if not self._finished:
            tail = self._resampler.flush()
            if len(tail):
                self._buffer = np.concatenate([self._buffer, tail])
            self._finished = True

    def pop(self) -> bytes | None:
        """The next payload, or ``None`` until more input (or ``finish``) arrives."""
        if self._opus is not None:
            n = self._opus.settings.frame_samples
            if len(self._buffer) >= n or (self._finished and len(self._buffer)):
                real = min(n, len(self._buffer))
                frame = self._take(real)
                if real < n:
                    frame = np.concatenate([frame, np.zeros(n - real, dtype=np.float32)])
                return self._emit(self._opus.encode(frame), real)
            return None
        if not len(self._buffer):
            return None
        chunk = self._take(len(self._buffer))
        return self._emit(self._pack_pcm(chunk), len(chunk))

    def fade_out(self) -> bytes | None:
        """After a cut: the next few ms faded to silence, so playback ends without a click.

        For Opus this is always one frame (silence if nothing is buffered), which
        also flushes the encoder's lookahead; for PCM it is up to ``FADE_MS``.
        """
        if self._opus is not None:
            n = self._opus.settings.frame_samples
            frame = self._take(min(n, len(self._buffer)))
            faded = np.concatenate([_fade_down(frame), np.zeros(n - len(frame), dtype=np.float32)])
            return self._emit(self._opus.encode(faded), len(frame))
        count = min(len(self._buffer), self.format.sample_rate * FADE_MS // 1000)
        if count == 0:
            return None
        return self._emit(self._pack_pcm(_fade_down(self._take(count))), count)

    @property
    def lookahead(self) -> int:
        """Encoder delay in output samples (Opus: the Ogg pre-skip; PCM: 0)."""
        return self._opus.lookahead if self._opus is not None else 0

    @property
    def buffered_samples(self) -> int:
        return len(self._buffer)

    def _take(self, count: int) -> np.ndarray:
        head, self._buffer = self._buffer[:count], self._buffer[count:]
        return head

    def _emit(self, payload: bytes, real_samples: int) -> bytes:
        self.samples_out += real_samples
        self.payloads_out += 1
        return payload

    def _pack_pcm(self, chunk: np.ndarray) -> bytes:
        if self.format.codec == "mulaw_8000":
            return s16_to_mulaw(float_to_s16(chunk)).tobytes()
        return float_to_s16le_bytes(chunk)


def _fade_down(samples: np.ndarray) -> np.ndarray:
    """Multiply by a cos² ramp from 1 (first sample) to 0 (last)."""
    ramp = np.cos(np.linspace(0.0, np.pi / 2, len(samples), dtype=np.float32)) ** 2
    return samples * ramp

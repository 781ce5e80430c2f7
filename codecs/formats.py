"""Output formats and the per-stream encoder that turns model PCM into payloads.

``StreamEncoder`` is fed float32 PCM at the model's rate as windows finish and
hands out one payload at a time, so the caller can stop between any two
payloads (a cancel) and end on a short fade.  Not thread-safe: one per stream.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from streamvox.codecs.mp3 import MP3_DECODED_DELAY, MP3_RATES
from streamvox.codecs.ogg import OggOpusWriter
from streamvox.codecs.opus import OPUS_RATE, OpusFrameEncoder, OpusSettings
from streamvox.codecs.pcm import float_to_s16, float_to_s16le_bytes, s16_to_alaw, s16_to_mulaw
from streamvox.codecs.resample import StreamResampler
from streamvox.codecs.sndfile_stream import SndfileStream
from streamvox.codecs.wav import wav_header

CODECS = ("opus", "ogg_opus", "pcm_s16le", "wav", "flac", "mp3", "mulaw_8000", "alaw_8000")
MIN_RATE, MAX_RATE = 8000, 48000
"""PCM, WAV and FLAC take any rate in this range (or the model's own)."""
FADE_MS = 10
_CONTAINERS = {"wav": "wav", "ogg_opus": "ogg", "flac": "flac", "mp3": "mp3"}
_SNDFILE = ("flac", "mp3")
_TELEPHONY = ("mulaw_8000", "alaw_8000")


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
        """The JSON shape sent in the ``ready`` event (MP3 adds the samples of encoder delay a
        decoder without gapless information plays before the audio)."""
        shape: dict[str, object] = {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "frame_ms": self.frame_ms,
            "container": _CONTAINERS.get(self.codec),
        }
        if self.codec == "mp3":
            shape["encoder_delay"] = MP3_DECODED_DELAY
        return shape


def resolve_format(
    codec: str, sample_rate: int | None, model_rate: int, opus: OpusSettings | None = None
) -> OutputFormat:
    """Validate a client's format request against what each codec can carry."""
    if codec not in CODECS:
        raise FormatError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    if codec in ("opus", "ogg_opus"):
        if sample_rate not in (None, OPUS_RATE):
            raise FormatError(f"{codec} is sent at {OPUS_RATE} Hz only, not {sample_rate}")
        settings = opus or OpusSettings()
        return OutputFormat(codec, OPUS_RATE, frame_ms=settings.frame_ms, opus=settings)
    if codec in _TELEPHONY:
        if sample_rate not in (None, 8000):
            raise FormatError(f"{codec} is sent at 8000 Hz only, not {sample_rate}")
        return OutputFormat(codec, 8000)
    if codec == "mp3":
        rate = sample_rate if sample_rate is not None else (model_rate if model_rate in MP3_RATES else 24000)
        if rate not in MP3_RATES:
            raise FormatError(f"mp3 carries {', '.join(map(str, MP3_RATES))} Hz, not {rate}")
        return OutputFormat(codec, rate)
    rate = model_rate if sample_rate is None else sample_rate
    if not MIN_RATE <= rate <= MAX_RATE and rate != model_rate:
        raise FormatError(f"sample_rate {rate} not supported; use {MIN_RATE} to {MAX_RATE} Hz")
    return OutputFormat(codec, rate)


class StreamEncoder:
    """Resamples model PCM to the output rate and cuts it into payloads.

    Opus is one packet per payload: raw, or (``ogg_opus``) each in its own Ogg page, written
    as soon as the packet is made, so ``<audio>`` and HTTP clients play it while it is
    generated; the last page ends the stream and trims its padding.  FLAC and MP3 payloads
    are whatever the encoder has made since the last one."""

    def __init__(self, fmt: OutputFormat, model_rate: int) -> None:
        self.format = fmt
        self._resampler = StreamResampler(model_rate, fmt.sample_rate)
        self._buffer = np.zeros(0, dtype=np.float32)
        self._finished = False
        self._opus = OpusFrameEncoder(fmt.opus) if fmt.codec in ("opus", "ogg_opus") else None
        self._ogg: OggOpusWriter | None = None
        self._pages = io.BytesIO()
        if fmt.codec == "ogg_opus":
            assert self._opus is not None
            self._ogg = OggOpusWriter(self._pages, pre_skip=self._opus.lookahead)
        self._sndfile = SndfileStream(fmt.codec, fmt.sample_rate) if fmt.codec in _SNDFILE else None
        self._tail_pad = 0
        """Zeros at the end of the buffer that only flush the encoder (not counted as audio)."""
        self.samples_out = 0
        """Real samples (output rate) handed out so far, padding excluded."""
        self.payloads_out = 0

    def header(self) -> bytes | None:
        """The bytes to send before any audio (a streaming WAV header; Ogg's OpusHead and
        OpusTags pages), if the format has one."""
        if self.format.codec == "wav":
            return wav_header(self.format.sample_rate)
        if self._ogg is not None:
            return self._take_pages()
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
            if self._ogg is not None and len(self._buffer):
                # Opus delays its output by its lookahead: without this much more input the last
                # real samples would never be decodable, and the final granule could not cover them.
                self._tail_pad = self.lookahead
                self._buffer = np.concatenate([self._buffer, np.zeros(self._tail_pad, dtype=np.float32)])
            self._finished = True

    def pop(self) -> bytes | None:
        """The next payload, or ``None`` until more input (or ``finish``) arrives."""
        if self._opus is not None:
            n = self._opus.settings.frame_samples
            # An Ogg stream keeps one sample back until the input ends, so its last packet
            # (the one whose page ends the stream) is always still to come.
            full = len(self._buffer) > n if self._ogg is not None else len(self._buffer) >= n
            if full or (self._finished and len(self._buffer)):
                taken = min(n, len(self._buffer))
                real = min(taken, len(self._buffer) - self._tail_pad)
                self._tail_pad -= taken - real
                frame = self._take(taken)
                if taken < n:
                    frame = np.concatenate([frame, np.zeros(n - taken, dtype=np.float32)])
                return self._emit(self._packet(frame, real, last=self._finished and not len(self._buffer)), real)
            if self._ogg is not None and self._finished and self.payloads_out == 0:
                self._ogg.close(total_samples=0)  # nothing was spoken: end the stream
                return self._emit(self._take_pages(), 0)
            return None
        if self._sndfile is not None:
            return self._pop_sndfile()
        if not len(self._buffer):
            return None
        chunk = self._take(len(self._buffer))
        return self._emit(self._pack_pcm(chunk), len(chunk))

    def _packet(self, frame: np.ndarray, real: int, last: bool) -> bytes:
        """One Opus packet of ``frame`` (``real`` samples of it not padding): raw, or in its Ogg
        page (the last page ends the stream, its granule trimmed to the real samples)."""
        assert self._opus is not None
        packet = self._opus.encode(frame)
        if self._ogg is None:
            return packet
        total = self.samples_out + real if last else None
        self._ogg.write_packet_now(packet, len(frame), last=last, total_samples=total)
        return self._take_pages()

    def _ogg_fade(self, faded: np.ndarray) -> bytes:
        """End an Ogg stream on ``faded``: its packets, the encoder's lookahead flushed with
        silence so every faded sample is decodable, the last page flagged and trimmed."""
        assert self._opus is not None and self._ogg is not None
        n = self._opus.settings.frame_samples
        tail = np.concatenate([faded, np.zeros(self.lookahead, dtype=np.float32)])
        frames = np.concatenate([tail, np.zeros(-len(tail) % n, dtype=np.float32)]).reshape(-1, n)
        last = len(frames) - 1
        pages = b"".join(
            self._packet(frame, len(faded) if i == last else 0, last=i == last) for i, frame in enumerate(frames)
        )
        self._buffer = np.zeros(0, dtype=np.float32)  # the stream ends here
        self._finished = True
        return pages

    def _pop_sndfile(self) -> bytes | None:
        assert self._sndfile is not None
        if self._sndfile.closed:
            return None
        real = len(self._buffer)
        data = self._sndfile.write(self._take(real)) if real else b""
        if self._finished:
            data += self._sndfile.close()
        if not data:
            self.samples_out += real  # the encoder holds them; their bytes come later
            return None
        return self._emit(data, real)

    def _take_pages(self) -> bytes:
        data = self._pages.getvalue()
        self._pages.seek(0)
        self._pages.truncate()
        return data

    def fade_out(self) -> bytes | None:
        """After a cut: the next few ms faded to silence, so playback ends without a click.

        For Opus this is always one frame (silence if nothing is buffered), which
        also flushes the encoder's lookahead; for PCM it is up to ``FADE_MS``.
        """
        if self._opus is not None:
            n = self._opus.settings.frame_samples
            frame = self._take(min(n, len(self._buffer)))
            if self._ogg is not None:
                return self._emit(self._ogg_fade(_fade_down(frame)), len(frame))
            faded = np.concatenate([_fade_down(frame), np.zeros(n - len(frame), dtype=np.float32)])
            return self._emit(self._opus.encode(faded), len(frame))
        count = min(len(self._buffer), self.format.sample_rate * FADE_MS // 1000)
        if self._sndfile is not None:
            if self._sndfile.closed:
                return None
            data = self._sndfile.write(_fade_down(self._take(count))) if count else b""
            self._buffer = np.zeros(0, dtype=np.float32)
            self._finished = True
            return self._emit(data + self._sndfile.close(), count)
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
        if self.format.codec == "alaw_8000":
            return s16_to_alaw(float_to_s16(chunk)).tobytes()
        return float_to_s16le_bytes(chunk)


def _fade_down(samples: np.ndarray) -> np.ndarray:
    """Multiply by a cos² ramp from 1 (first sample) to 0 (last)."""
    ramp = np.cos(np.linspace(0.0, np.pi / 2, len(samples), dtype=np.float32)) ** 2
    return samples * ramp

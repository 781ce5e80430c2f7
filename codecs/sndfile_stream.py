"""FLAC and MP3 encoded as a stream, through libsndfile (``soundfile``), bytes out as they are made.

libsndfile writes to a file; here the file is :class:`_AppendOnlySink`, which
hands out each byte once.  libsndfile seeks back at close to rewrite its
header (FLAC's STREAMINFO totals): bytes already sent cannot change, so those
rewrites are dropped, and the stream keeps "length unknown" (0) in its
STREAMINFO, which the FLAC format allows for live streams.  MP3 is constant
bitrate (what live-stream players expect) without its blank Info frame (see
``mp3.py``).  Not thread-safe: one per stream.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile
from streamvox.codecs.mp3 import FrameTrimmer, drop_blank_first_frame

_FORMATS: dict[str, tuple[str, str, dict[str, object]]] = {
    "flac": ("FLAC", "PCM_16", {}),
    "mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT", "compression_level": 0.5}),
}
"""libsndfile's container, subtype and options per codec (MP3 at level 0.5: 80 kbit/s at 22.05 kHz)."""


class _AppendOnlySink(io.RawIOBase):
    """A seekable file for libsndfile whose bytes, once taken, are never changed."""

    def __init__(self) -> None:
        self._data = bytearray()
        """The bytes from offset ``_taken`` on: what was taken is gone (it cannot change)."""
        self._pos = 0
        self._taken = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._taken + len(self._data)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Reads of bytes already taken see zeros (the encoder only ever rereads its header)."""
        size = max(0, min(len(buffer), self._taken + len(self._data) - self._pos))
        chunk = bytearray(size)
        lo, hi = max(self._pos, self._taken), self._pos + size
        if lo < hi:
            chunk[lo - self._pos :] = self._data[lo - self._taken : hi - self._taken]
        buffer[:size] = chunk
        self._pos += size
        return size

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        data = bytes(data)
        end = self._pos + len(data)
        start = max(self._pos, self._taken)  # what was already taken stays as it was sent
        if start < end:
            lo, hi = start - self._taken, end - self._taken
            if len(self._data) < hi:
                self._data.extend(bytes(hi - len(self._data)))
            self._data[lo:hi] = data[start - self._pos :]
        self._pos = end
        return len(data)

    def take(self) -> bytes:
        """Every byte written since the last ``take``; only those are kept in memory."""
        out = bytes(self._data)
        self._taken += len(self._data)
        self._data = bytearray()
        return out


class SndfileStream:
    """Encodes float32 mono at ``sample_rate`` to ``codec`` (``flac`` or ``mp3``) incrementally."""

    def __init__(self, codec: str, sample_rate: int) -> None:
        container, subtype, options = _FORMATS[codec]
        self._sink = _AppendOnlySink()
        self._file: soundfile.SoundFile | None = soundfile.SoundFile(
            self._sink, "w", samplerate=sample_rate, channels=1, format=container, subtype=subtype, **options
        )
        self._pending = b""
        """MP3: bytes held until the first frame is whole (it may be the blank Info frame)."""
        self._first_settled = codec != "mp3"
        self._trimmer = FrameTrimmer() if codec == "mp3" else None
        self._samples = 0

    def write(self, samples: np.ndarray) -> bytes:
        """Encode ``samples``; return the bytes the encoder has made so far (maybe none yet)."""
        if self._file is None:
            raise ValueError("write after close")
        self._file.write(np.asarray(samples, dtype=np.float32))
        self._samples += len(samples)
        data = self._settle(self._sink.take())
        if self._trimmer is not None and data:
            self._trimmer.follow(data)
        return data

    def close(self) -> bytes:
        """Flush the encoder; return its last bytes."""
        if self._file is not None:
            self._file.close()
            self._file = None
        data = self._settle(self._sink.take())
        data, self._pending = self._pending + data, b""
        if self._trimmer is not None:
            data = self._trimmer.trim_end(data, self._samples)
            self._trimmer = None
        return data

    def _settle(self, data: bytes) -> bytes:
        if self._first_settled:
            return data
        data, self._first_settled = drop_blank_first_frame(self._pending + data)
        if not self._first_settled:
            self._pending = data
            return b""
        self._pending = b""
        return data

    @property
    def closed(self) -> bool:
        return self._file is None

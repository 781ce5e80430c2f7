"""Streaming sample-rate conversion over soxr."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Converts a mono float32 stream chunk by chunk; ``flush`` returns the tail.

    Output length over the whole stream is ``round(n_in * out_rate / in_rate)``
    (soxr's own accounting); equal rates pass samples through untouched.
    Not thread-safe: one instance per stream.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=quality)
        )

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk; may return fewer samples than the ratio implies (held in the filter)."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """Return what the filter still holds; the stream is finished afterwards."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

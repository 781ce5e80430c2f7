"""Decoding what a client received, the way a player of a live stream would."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def sf_read_stream(data: bytes) -> tuple[np.ndarray, int]:
    """Decode a streamed container (Ogg/Opus, FLAC) with libsndfile, reading to the end of the
    bytes rather than to the length its header gives: a live stream's header says 'unknown'."""
    with sf.SoundFile(io.BytesIO(data)) as f:
        f.seekable = lambda: False  # type: ignore[method-assign]  # read on to the end of the data
        parts = []
        while len(block := f.read(4096, dtype="float32")):
            parts.append(block)
        rate = f.samplerate
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)), rate


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` in dB (infinite when equal)."""
    noise = np.sum((reference.astype(np.float64) - test) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / noise))

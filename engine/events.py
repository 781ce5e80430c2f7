"""What the engine reports to a stream's owner.

Events are immutable.  Units create them on the engine's workers; the engine
thread alone hands them to a stream's sink, which passes them to its own
thread (the server's engine client uses ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentStarted:
    """A text segment's audio begins at ``start_sample`` (model rate) in the stream."""

    stream_id: str
    index: int
    start_sample: int


@dataclass(frozen=True)
class WordTiming:
    """One word of a segment: where it is in the segment's text and when it sounds.

    Offsets are characters of the segment's raw client text (``char_end`` exclusive);
    samples are model-rate samples from the segment's start (``SegmentStarted.start_sample``).
    """

    char_start: int
    char_end: int
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class SegmentWords:
    """The word timings of segment ``index``: exact (model durations) or ``estimated``."""

    stream_id: str
    index: int
    words: tuple[WordTiming, ...]
    estimated: bool


@dataclass(frozen=True)
class SegmentFinished:
    """Every sample of segment ``index`` has been emitted (or it had nothing to speak)."""

    stream_id: str
    index: int


@dataclass(frozen=True)
class AudioChunk:
    """Finished, seam-smoothed float32 samples at the model rate, in stream order."""

    stream_id: str
    pcm: np.ndarray


@dataclass(frozen=True)
class StreamDone:
    """Every segment is spoken; ``samples`` is the stream's total at the model rate."""

    stream_id: str
    samples: int
    compute_s: float
    """Engine thread time spent on this stream (front, decode, smoothing)."""


@dataclass(frozen=True)
class StreamAborted:
    """The abort was honoured: no further event will come for this stream."""

    stream_id: str


@dataclass(frozen=True)
class StreamFailed:
    """Synthesis failed for this stream only; the engine keeps serving the others."""

    stream_id: str
    code: str
    message: str


EngineEvent = SegmentStarted | SegmentWords | SegmentFinished | AudioChunk | StreamDone | StreamAborted | StreamFailed

"""What the engine thread reports to a stream's owner, and what it is asked to do.

Events are immutable and are created on the engine thread; the owner's sink
hands them to its own thread (the server uses ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SynthesisParams:
    """Per-stream synthesis settings (the voice's own config fills the ``None``\\s)."""

    length_scale: float | None = None
    """> 1 speaks slower; 1 / speed."""
    noise_scale: float | None = None
    noise_w: float | None = None
    speaker: int = 0
    seed: int | None = None
    """Seeds every noise draw of the stream: the same text and seed give the same audio."""
    noise: bool = True
    """``False`` turns all sampling noise off (deterministic regardless of seed)."""


@dataclass(frozen=True)
class SegmentStarted:
    """A text segment's audio begins at ``start_sample`` (model rate) in the stream."""

    stream_id: str
    index: int
    start_sample: int


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


EngineEvent = SegmentStarted | SegmentFinished | AudioChunk | StreamDone | StreamAborted | StreamFailed

"""The vocoder window schedule: a small first window for latency, then growing ones.

Small windows cost more per frame (the context frames on each side are decoded
and thrown away), big windows delay audio; so a stream's first segment starts
with ``first_frames``, later segments (whose audio is not awaited) with
``later_first_frames``, and windows grow by ``growth`` up to ``max_frames``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowPlan:
    """Window sizes in latent frames (256 samples each for Piper)."""

    first_frames: int = 24
    """First window of a stream: ~279 ms of 22.05 kHz audio, so the client has played little
    of it when the second window arrives even on a loaded machine."""
    later_first_frames: int = 64
    """First window of a later segment (~0.74 s of audio).  Bigger windows decode fewer context
    frames (measured on the latency paragraph: 64 frames cost 1.126 CPU s per second of the raw
    model's, 128 frames 1.056), but a later segment starts when its sentence's text is complete,
    often with little audio left to play, and a unit once started is not stopped: in a burst of
    reply starts, 64 frames instead of 128 left 17 late units instead of 187 over 8 load runs of
    36 listeners, for 2.5-3.5 % more CPU per audio second (``scripts/ab.py``, 2026-12-05)."""
    max_frames: int = 512
    """Largest window (~6 s of audio, ~0.5 s of one core): caps the work between two abort checks."""
    growth: float = 2.0
    """Each window is this much larger than the one before: the second window must arrive before
    the first has played (16 frames = 186 ms), so the schedule grows gently."""
    context_frames: int = 10
    """Frames decoded on each side and discarded: the decoder's receptive field, so a window's samples
    equal the one-shot decode's to float rounding (125-130 dB on the bundled voice; 9 frames give
    78-84 dB, 8 give 64-77).  With a streaming decoder only a segment's first window decodes
    them, before it."""
    flow_context_frames: int = 24
    """Prior frames run through the flow on each side and discarded (its receptive field)."""
    flow_chunk_frames: int = 512
    """After the first window the flow runs ahead in chunks of this many frames."""

    def __post_init__(self) -> None:
        if not 1 <= self.first_frames <= self.max_frames or not 1 <= self.later_first_frames <= self.max_frames:
            raise ValueError(
                f"need 1 <= first_frames, later_first_frames <= max_frames, got {self.first_frames}, "
                f"{self.later_first_frames}, {self.max_frames}"
            )
        if self.growth < 1.0:
            raise ValueError(f"growth must be >= 1, got {self.growth}")
        if self.context_frames < 0 or self.flow_context_frames < 0:
            raise ValueError("context frames must be >= 0")
        if self.flow_chunk_frames < 1:
            raise ValueError(f"flow_chunk_frames must be >= 1, got {self.flow_chunk_frames}")

    def windows(self, total_frames: int, first: bool = True) -> Iterator[tuple[int, int]]:
        """``(start, end)`` frame ranges covering ``[0, total_frames)`` exactly once, in order.

        ``first`` selects the small opening window of a stream's first segment.

        A final sliver shorter than half the window it follows is merged into
        that window rather than decoded on its own.
        """
        start = 0
        size = self.first_frames if first else self.later_first_frames
        while start < total_frames:
            end = min(total_frames, start + size)
            if total_frames - end < size // 2:
                end = total_frames
            yield start, end
            start = end
            size = min(self.max_frames, max(size + 1, int(size * self.growth)))

"""The vocoder window schedule: a small first window for latency, then growing ones.

Small windows cost more per frame (the context frames on each side are decoded
and thrown away), big windows delay audio; so a segment starts with
``first_frames`` and doubles up to ``max_frames``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class WindowPlan:
    """Window sizes in latent frames (256 samples each for Piper)."""

    first_frames: int = 16
    """First window of a segment: ~186 ms of 22.05 kHz audio, decoded in ~15 ms."""
    max_frames: int = 128
    """Largest window: caps the work between two abort checks."""
    growth: float = 2.0
    context_frames: int = 12
    """Frames decoded on each side and discarded; 12 reaches the decoder's receptive field."""

    def __post_init__(self) -> None:
        if self.first_frames < 1 or self.max_frames < self.first_frames:
            raise ValueError(f"need 1 <= first_frames <= max_frames, got {self.first_frames}, {self.max_frames}")
        if self.growth < 1.0:
            raise ValueError(f"growth must be >= 1, got {self.growth}")
        if self.context_frames < 0:
            raise ValueError(f"context_frames must be >= 0, got {self.context_frames}")

    def windows(self, total_frames: int) -> Iterator[tuple[int, int]]:
        """``(start, end)`` frame ranges covering ``[0, total_frames)`` exactly once, in order.

        A final sliver shorter than half the window it follows is merged into
        that window rather than decoded on its own.
        """
        start = 0
        size = self.first_frames
        while start < total_frames:
            end = min(total_frames, start + size)
            if total_frames - end < size // 2:
                end = total_frames
            yield start, end
            start = end
            size = min(self.max_frames, max(size + 1, int(size * self.growth)))

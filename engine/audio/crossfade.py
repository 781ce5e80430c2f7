"""Overlap-add where two independently generated pieces of audio meet.

The fade-in window ``w`` is a raised cosine and the fade-out is ``1 - w``, so
the two halves sum to one at every sample and a constant signal crosses a
seam unchanged.  Every sample is accounted for: the output length is the sum
of the pieces minus one overlap per seam.
"""

from __future__ import annotations

import numpy as np


def fade_in_window(length: int) -> np.ndarray:
    """Raised-cosine ramp from 0 (exclusive) towards 1 over ``length`` samples, float64."""
    if length <= 0:
        return np.zeros(0, dtype=np.float64)
    t = (np.arange(length, dtype=np.float64) + 0.5) / length
    return 0.5 - 0.5 * np.cos(np.pi * t)


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Mix the end of one piece into the start of the next (equal lengths)."""
    if len(tail) != len(head):
        raise ValueError(f"crossfade needs equal lengths, got {len(tail)} and {len(head)}")
    w = fade_in_window(len(head))
    mixed = tail.astype(np.float64) * (1.0 - w) + head.astype(np.float64) * w
    return mixed.astype(np.float32)


class SeamSmoother:
    """Joins a stream of pieces, each arriving in chunks, with a short crossfade at each seam.

    ``add`` returns what can be emitted now; the last ``overlap`` samples of the
    current piece are held back until the next piece starts (and are then mixed
    with its first samples) or ``finish`` releases them.  A piece shorter than
    the overlap shortens that seam's overlap.  Not thread-safe.
    """

    def __init__(self, overlap: int) -> None:
        if overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        self.overlap = overlap
        self._held = np.zeros(0, dtype=np.float32)
        self._head = np.zeros(0, dtype=np.float32)
        self._seam_pending = False
        self.samples_in = 0
        self.samples_out = 0
        self.overlapped = 0
        """Samples removed by crossfades so far (one overlap per seam)."""

    def start_piece(self, length: int) -> int:
        """The next chunks (``length`` samples in all) are a new piece; return where it starts.

        The held tail of the previous piece will be crossfaded into its start;
        the returned offset counts output samples, overlaps removed.
        """
        if self._seam_pending:
            raise RuntimeError("start_piece before end_piece of the previous piece")
        overlap = min(len(self._held), length)
        if len(self._held):
            self._seam_pending = True
        return self.samples_out + len(self._held) - overlap

    def add(self, chunk: np.ndarray) -> np.ndarray:
        """Take one chunk of the current piece; return the samples ready to play."""
        chunk = np.asarray(chunk, dtype=np.float32)
        self.samples_in += len(chunk)
        out: list[np.ndarray] = []
        if self._seam_pending:
            self._head = np.concatenate([self._head, chunk])
            if len(self._head) < len(self._held):
                return self._count(np.zeros(0, dtype=np.float32))
            chunk = self._resolve_seam(out)
        joined = np.concatenate([self._held, chunk])
        keep = min(self.overlap, len(joined))
        out.append(joined[: len(joined) - keep])
        self._held = joined[len(joined) - keep :]
        return self._count(np.concatenate(out))

    def end_piece(self) -> np.ndarray:
        """The current piece is complete; a seam still waiting on a short head is closed now."""
        if not self._seam_pending:
            return np.zeros(0, dtype=np.float32)
        out: list[np.ndarray] = []
        self._held = self._resolve_seam(out)
        return self._count(np.concatenate(out))

    def finish(self) -> np.ndarray:
        """No more pieces: release the held tail."""
        closed = self.end_piece()
        tail, self._held = self._held, np.zeros(0, dtype=np.float32)
        return np.concatenate([closed, self._count(tail)])

    def _resolve_seam(self, out: list[np.ndarray]) -> np.ndarray:
        n = min(len(self._held), len(self._head))
        out.append(self._held[: len(self._held) - n])
        out.append(crossfade(self._held[len(self._held) - n :], self._head[:n]))
        self.overlapped += n
        rest = self._head[n:]
        self._held = np.zeros(0, dtype=np.float32)
        self._head = np.zeros(0, dtype=np.float32)
        self._seam_pending = False
        return rest

    def _count(self, out: np.ndarray) -> np.ndarray:
        self.samples_out += len(out)
        return out

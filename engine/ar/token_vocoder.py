"""Streaming a token vocoder: decode semantic tokens in growing chunks as the AR model makes them.

A chunk is decoded once enough tokens exist (its end plus ``lookahead``).  Each
decode re-runs the vocoder over a window that starts ``left_context`` tokens
before the audio still owed, so the frames it keeps were computed with the
context a one-shot decode would give them; the decoder is told where the
window starts (``first_token``), so a model that draws noise by absolute frame
gives a frame decoded twice the same noise, and where the audio it keeps starts
(``keep_from``), so a model whose last stage is local (SoVITS's HiFi-GAN) runs
that stage only over the kept audio and its receptive field.  The last
``overlap`` tokens of each decode are held back and crossfaded (halves summing
to one) with the next decode's version of them.  Every token yields exactly
``samples_per_token`` samples: the audio emitted for ``n`` tokens is
``n * samples_per_token`` long.

The model behind it is a :class:`TokenDecoder` (GPT-SoVITS's SoVITS today),
so every AR family streams through this one piece.  Not thread-safe: one
stream, driven by one thread at a time.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from streamvox.engine.audio.crossfade import crossfade

Token = Hashable
"""A token is whatever one step of the model emits: a semantic id (GPT-SoVITS) or a frame of
codebook ids (Dia: a tuple of nine)."""


class TokenDecoder(Protocol):
    """Decodes a window of one utterance's tokens to audio (bound to that utterance's text,
    speaker and noise).  Must be safe to call from any one thread at a time."""

    @property
    def samples_per_token(self) -> int: ...

    def decode(self, tokens: Sequence[Any], first_token: int, keep_from: int = 0) -> np.ndarray:
        """float32 audio of ``tokens[keep_from:]``, ``(len(tokens) - keep_from) * samples_per_token``
        samples, as the whole window gives it; ``first_token`` is where ``tokens`` start in the
        utterance.  The tokens before ``keep_from`` are context, whose own audio is not wanted: a
        decoder whose last stage is local may skip most of their work there."""
        ...


@dataclass(frozen=True)
class ChunkSchedule:
    """Where chunks end, in tokens: ``first``, then each chunk ``growth`` times the last, up to ``cap``."""

    first: int = 12
    growth: float = 2.0
    cap: int = 96
    lookahead: int = 4
    """Tokens generated past a chunk's end before it is decoded (right context for its last frames)."""
    first_lookahead: int | None = None
    """The first chunk's own lookahead (``None``: ``lookahead``).  A shorter one brings the first
    audio forward by that many decode steps and a smaller first window, at the cost of less right
    context for that chunk's last frames only; later chunks keep ``lookahead``."""
    left_context: int = 24
    """Tokens re-decoded before the audio still owed (at least the flow + HiFi-GAN receptive field)."""
    overlap: int = 2
    """Tokens held back and crossfaded with the next chunk's decode of them."""
    bucket: int = 16
    """Decode windows are stretched to the left (more context, where there is any) to a multiple
    of this many tokens, so a few window shapes recur: each new shape costs the convolution
    library a one-off setup (measured: 0.1-0.3 s in fp32, 2-3 s in bf16 at v2 size)."""

    def __post_init__(self) -> None:
        if self.first <= self.overlap or self.cap < self.first:
            raise ValueError(f"need overlap ({self.overlap}) < first ({self.first}) <= cap ({self.cap})")
        if (
            self.growth < 1.0
            or min(self.lookahead, self.left_context, self.overlap, self.lookahead_after(self.first)) < 0
        ):
            raise ValueError("growth must be >= 1; lookahead, first_lookahead, left_context and overlap >= 0")
        if self.bucket < 1:
            raise ValueError("bucket must be >= 1")

    def window_sizes(self) -> list[int]:
        """The decode window lengths (tokens) that recur: those of the first chunks whose window,
        stretched to a bucket multiple, would reach before the utterance's start (so it is cut
        there; fixed by the schedule), and every bucket multiple up to the longest window.  A
        voice warms these up; a short utterance's last window can still be any length."""
        early: set[int] = set()
        owed = 0
        ends = self.boundaries()
        while owed - self.left_context < self.bucket:  # past that, no stretch reaches token 0
            end = next(ends)
            stop = end + self.lookahead_after(end)
            early.add(stop - self.window_start(owed, stop))
            owed = end - self.overlap
        longest = self.left_context + self.overlap + self.cap + self.lookahead
        return sorted(early | set(range(self.bucket, longest + self.bucket, self.bucket)))

    def lookahead_after(self, end: int) -> int:
        """Tokens to generate past the chunk ending at ``end`` before decoding it."""
        if end == self.first and self.first_lookahead is not None:
            return self.first_lookahead
        return self.lookahead

    def window_start(self, owed_from: int, stop: int) -> int:
        """Where the decode window ending at ``stop`` starts when the audio still owed starts at
        ``owed_from``: ``left_context`` tokens before it, stretched left so the window is a
        multiple of ``bucket`` tokens long, but never before the utterance's first token."""
        start = max(0, owed_from - self.left_context)
        return max(0, stop - -(-(stop - start) // self.bucket) * self.bucket)

    def boundaries(self) -> Iterator[int]:
        """Chunk ends: 12, 36, 84, 180, 276, ... for the defaults."""
        end, size = 0, float(self.first)
        while True:
            end += int(size)
            yield end
            size = min(float(self.cap), size * self.growth)


class StreamingVocoder:
    """One utterance's token-to-audio stream (see the module docstring).

    Feed tokens with :meth:`add`; :meth:`pending` says whether a chunk can be decoded;
    :meth:`decode` decodes it; :meth:`finish` decodes what is left once the tokens end.
    """

    def __init__(self, decoder: TokenDecoder, schedule: ChunkSchedule) -> None:
        self.decoder = decoder
        self.schedule = schedule
        self.tokens: list[Token] = []
        self._boundaries = schedule.boundaries()
        self._next_end = next(self._boundaries)
        self._settled = 0
        """Tokens whose audio is emitted or held as the crossfade tail."""
        self._tail = np.zeros(0, dtype=np.float32)
        self.samples_emitted = 0
        self.finished = False

    def add(self, tokens: Sequence[Token]) -> None:
        if self.finished:
            raise RuntimeError("tokens added after finish")
        self.tokens.extend(tokens)

    def pending(self) -> bool:
        """Whether enough tokens exist to decode the next chunk."""
        return not self.finished and len(self.tokens) >= self._next_end + self.schedule.lookahead_after(self._next_end)

    def decode(self) -> np.ndarray:
        """Decode the next chunk; return the audio now final (float32 at the model's rate)."""
        if not self.pending():
            raise RuntimeError("no chunk is ready")
        audio = self._decode_until(self._next_end, final=False)
        self._next_end = next(self._boundaries)
        return audio

    def finish(self) -> np.ndarray:
        """The tokens have ended: decode everything still owed, tail included."""
        if self.finished:
            return np.zeros(0, dtype=np.float32)
        audio = self._decode_until(len(self.tokens), final=True)
        self.finished = True
        return audio

    def _decode_until(self, end: int, final: bool) -> np.ndarray:
        spt = self.decoder.samples_per_token
        overlap = len(self._tail) // spt
        owed_from = self._settled - overlap
        if end <= owed_from:
            return self._emit(np.zeros(0, dtype=np.float32), final)
        stop = len(self.tokens) if final else min(len(self.tokens), end + self.schedule.lookahead_after(end))
        start = self.schedule.window_start(owed_from, stop)
        window = self.decoder.decode(self.tokens[start:stop], start, owed_from - start)
        piece = window[: (end - owed_from) * spt].astype(np.float32)
        if overlap:
            piece[: overlap * spt] = crossfade(self._tail, piece[: overlap * spt])
        if final:
            self._settled = end
            self._tail = np.zeros(0, dtype=np.float32)
            return self._emit(piece, final)
        hold = min(self.schedule.overlap, end - owed_from) * spt
        self._tail = piece[len(piece) - hold :].copy()
        self._settled = end
        return self._emit(piece[: len(piece) - hold], final)

    def _emit(self, audio: np.ndarray, final: bool) -> np.ndarray:
        self.samples_emitted += len(audio)
        if final:
            expected = len(self.tokens) * self.decoder.samples_per_token
            if self.samples_emitted != expected:
                raise RuntimeError(f"sample accounting: emitted {self.samples_emitted}, owed {expected}")
        return audio

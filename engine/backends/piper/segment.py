"""One text segment's audio, produced window by window from its prior frames.

The flow runs ahead of the decoder in chunks of ``flow_chunk_frames``, each
with ``flow_context_frames`` of prior either side, and never past the last
frame the decoder reads.  Only a stream's first segment starts on a chunk just
large enough for its first window, so the first audio needs little work; a
later segment (earlier audio is still playing) runs its flow in one call when
it fits a chunk, which saves a call and its context frames per segment
(measured on LLM-paced replies: 5–6 % of the CPU per audio second).  The
decoder then runs each window with ``context_frames`` of ``z`` either side.
Only the segment's own frames are decoded (a reading's lead and preview serve
as context), plus, when a preview follows, ``tail_samples`` into it: the next
segment starts on those same sounds, so the crossfade at the seam mixes two
renderings of one moment.
Not thread-safe: driven by the one unit of its stream in flight (on whichever
worker runs it).
"""

from __future__ import annotations

import numpy as np
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper.voice import HOP_LENGTH, FrontOutput, PiperVoice


class PiperSegment:
    """Yields a segment's samples one vocoder window at a time, in order."""

    def __init__(
        self,
        voice: PiperVoice,
        front: FrontOutput,
        plan: WindowPlan,
        speaker: int = 0,
        first: bool = True,
        frames: tuple[int, int] | None = None,
        tail_samples: int = 0,
    ) -> None:
        """``frames``: the ``[start, end)`` to decode (default all); ``tail_samples`` more are
        decoded past ``end`` (at most what the frames after it hold)."""
        self.voice = voice
        self.front = front
        self.plan = plan
        self.speaker = speaker
        self.start, self.end = frames if frames is not None else (0, front.frames)
        self.tail_samples = min(tail_samples, (front.frames - self.end) * HOP_LENGTH)
        self._tail_frames = -(-self.tail_samples // HOP_LENGTH)
        """Frames past ``end`` the last window decodes for ``tail_samples``."""
        self._z = np.empty_like(front.z_p)
        self._z_from = max(0, self.start - plan.context_frames)
        """The first frame the decoder needs ``z`` for: the flow starts there."""
        self._z_ready = self._z_from
        self._z_until = min(front.frames, self.end + self._tail_frames + plan.context_frames)
        """One past the last frame the decoder reads: the flow stops there."""
        self._small_first_chunk = first
        self._windows = plan.windows(self.end - self.start, first)
        self.done = self.end <= self.start

    @property
    def samples(self) -> int:
        return (self.end - self.start) * HOP_LENGTH + self.tail_samples

    def next_window(self, urgent: bool = False) -> np.ndarray:
        """Decode the next window; sets ``done`` after the last one.

        ``urgent`` runs it on the multi-threaded sessions (a stream's first audio).
        """
        start, end = (self.start + f for f in next(self._windows))
        last = end >= self.end
        tail_frames = self._tail_frames if last else 0
        frames = self.front.frames
        needed = min(frames, end + tail_frames + self.plan.context_frames)
        if self._z_ready < needed:
            small = self._small_first_chunk and self._z_ready == self._z_from
            target = needed if small else max(needed, self._z_ready + self.plan.flow_chunk_frames)
            target = min(self._z_until, target)
            self._z[:, self._z_ready : target] = self.voice.flow_window(
                self.front.z_p, self._z_ready, target, self.plan.flow_context_frames, self.speaker, urgent
            )
            self._z_ready = target
        audio = self.voice.decode_window(
            self._z[:, :needed], start, end + tail_frames, self.plan.context_frames, self.speaker, urgent
        )
        self.done = last
        return audio[: (end - start) * HOP_LENGTH + (self.tail_samples if last else 0)]

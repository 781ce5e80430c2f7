"""One text segment's audio, produced window by window from its prior frames.

The flow runs ahead of the decoder in chunks (small for the first window, so
the first audio needs little work; ``flow_chunk_frames`` afterwards), each with
``flow_context_frames`` of prior either side; the decoder then runs each
window with ``context_frames`` of ``z`` either side.  Only the segment's own
frames are decoded (a reading's lead and preview serve as context), plus, when
a preview follows, ``tail_samples`` into it: the next segment starts on those
same sounds, so the crossfade at the seam mixes two renderings of one moment.
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
        self._z = np.empty_like(front.z_p)
        self._z_from = max(0, self.start - plan.context_frames)
        """The first frame the decoder needs ``z`` for: the flow starts there."""
        self._z_ready = self._z_from
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
        tail_frames = -(-self.tail_samples // HOP_LENGTH) if last else 0
        frames = self.front.frames
        needed = min(frames, end + tail_frames + self.plan.context_frames)
        if self._z_ready < needed:
            first_chunk = self._z_ready == self._z_from
            target = needed if first_chunk else max(needed, self._z_ready + self.plan.flow_chunk_frames)
            target = min(frames, target)
            self._z[:, self._z_ready : target] = self.voice.flow_window(
                self.front.z_p, self._z_ready, target, self.plan.flow_context_frames, self.speaker, urgent
            )
            self._z_ready = target
        audio = self.voice.decode_window(
            self._z[:, :needed], start, end + tail_frames, self.plan.context_frames, self.speaker, urgent
        )
        self.done = last
        return audio[: (end - start) * HOP_LENGTH + (self.tail_samples if last else 0)]

"""One text segment's audio, produced window by window from its prior frames.

The flow runs ahead of the decoder in chunks (small for the first window, so
the first audio needs little work; ``flow_chunk_frames`` afterwards), each with
``flow_context_frames`` of prior either side; the decoder then runs each
window with ``context_frames`` of ``z`` either side.  Not thread-safe: driven by
the one unit of its stream in flight (on whichever worker runs it).
"""

from __future__ import annotations

import numpy as np
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper.voice import HOP_LENGTH, FrontOutput, PiperVoice


class PiperSegment:
    """Yields a segment's samples one vocoder window at a time, in order."""

    def __init__(
        self, voice: PiperVoice, front: FrontOutput, plan: WindowPlan, speaker: int = 0, first: bool = True
    ) -> None:
        self.voice = voice
        self.front = front
        self.plan = plan
        self.speaker = speaker
        self._z = np.empty_like(front.z_p)
        self._z_ready = 0
        self._windows = plan.windows(front.frames, first)
        self.done = front.frames == 0

    @property
    def samples(self) -> int:
        return self.front.frames * HOP_LENGTH

    def next_window(self, urgent: bool = False) -> np.ndarray:
        """Decode the next window; sets ``done`` after the last one.

        ``urgent`` runs it on the multi-threaded sessions (a stream's first audio).
        """
        start, end = next(self._windows)
        frames = self.front.frames
        needed = min(frames, end + self.plan.context_frames)
        if self._z_ready < needed:
            target = needed if self._z_ready == 0 else max(needed, self._z_ready + self.plan.flow_chunk_frames)
            target = min(frames, target)
            self._z[:, self._z_ready : target] = self.voice.flow_window(
                self.front.z_p, self._z_ready, target, self.plan.flow_context_frames, self.speaker, urgent
            )
            self._z_ready = target
        audio = self.voice.decode_window(
            self._z[:, :needed], start, end, self.plan.context_frames, self.speaker, urgent
        )
        self.done = end >= frames
        return audio

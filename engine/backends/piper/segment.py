"""One text segment's audio, produced window by window from its prior frames.

The flow runs ahead of the decoder in chunks of ``flow_chunk_frames``, each
with ``flow_context_frames`` of prior either side, and never past the last
frame the decoder reads.  Only a stream's first segment starts on a chunk just
large enough for its first window, so the first audio needs little work; a
later segment (earlier audio is still playing) runs its flow in one call when
it fits a chunk, which saves a call and its context frames per segment
(measured on LLM-paced replies: 5–6 % of the CPU per audio second).
Where the voice has a streaming decoder (``stream_graph``), a segment's
windows go through one :class:`DecoderStream`: each decodes only frames not
decoded before, fed ``lookahead_frames`` past its end, and keeps what it
decodes past its end for the next window.  Otherwise the decoder runs each
window with ``context_frames`` of ``z`` either side.  Either way only the
segment's own frames are decoded (decoding starts ``context_frames`` before
them; a reading's lead and preview serve as context), plus, when a preview
follows, ``tail_samples`` into it: the next segment starts on those same
sounds, so the crossfade at the seam mixes two renderings of one moment.
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
        self._stream = voice.streaming.stream(speaker) if voice.streaming is not None else None
        reach = plan.context_frames if self._stream is None else voice.streaming.lookahead_frames
        self._z_until = min(front.frames, self.end + self._tail_frames + reach)
        """One past the last frame the decoder reads: the flow stops there."""
        self._decoded = np.zeros(0, dtype=np.float32)
        """Streaming decoder only: samples decoded and not yet returned, from ``_decoded_from``."""
        self._decoded_from = self._z_from * HOP_LENGTH
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
        self.done = last
        if self._stream is not None:
            return self._stream_window(start, end * HOP_LENGTH + (self.tail_samples if last else 0), urgent)
        needed = min(self.front.frames, end + tail_frames + self.plan.context_frames)
        self._run_flow(needed, urgent)
        audio = self.voice.decode_window(
            self._z[:, :needed], start, end + tail_frames, self.plan.context_frames, self.speaker, urgent
        )
        return audio[: (end - start) * HOP_LENGTH + (self.tail_samples if last else 0)]

    def _run_flow(self, needed: int, urgent: bool) -> None:
        """Latent frames ``z`` through ``needed`` (or through the next chunk, see the module)."""
        if self._z_ready >= needed:
            return
        small = self._small_first_chunk and self._z_ready == self._z_from
        target = needed if small else max(needed, self._z_ready + self.plan.flow_chunk_frames)
        target = min(self._z_until, target)
        self._z[:, self._z_ready : target] = self.voice.flow_window(
            self.front.z_p, self._z_ready, target, self.plan.flow_context_frames, self.speaker, urgent
        )
        self._z_ready = target

    def _stream_window(self, start: int, until: int, urgent: bool) -> np.ndarray:
        """Samples from frame ``start`` to sample ``until`` through the streaming decoder: it is
        fed the frames that complete them and keeps what it decodes past them for the next
        window.  Decoding starts ``context_frames`` before the segment's first frame, as the
        windowed decode's first window does, and goes no further than the one-shot decode of
        the reading would need: each sample equals that decode's where both see the same
        frames."""
        stream, graph = self._stream, self._stream.decoder.graph
        decoded_to = self._decoded_from + self._decoded.shape[0]
        if decoded_to < until and not stream.finished:
            warm = self._z_from + stream.frames + graph.warmup_frames  # a first call's minimum
            feed_to = min(self.front.frames, max(-(-(until + graph.lag) // HOP_LENGTH), warm))
            self._run_flow(feed_to, urgent)
            final = feed_to >= self.front.frames
            audio = stream.feed(self._z[:, stream.frames + self._z_from : feed_to], final=final, urgent=urgent)
            self._decoded = np.concatenate([self._decoded, audio])
        begin = start * HOP_LENGTH - self._decoded_from
        out = self._decoded[begin : until - self._decoded_from]
        self._decoded = self._decoded[until - self._decoded_from :]
        self._decoded_from = until
        return out

"""A stream's audio on its way out of a backend: seams between segments, and the closing tail.

Every backend joins a stream's segments with the same short crossfade and ends
the stream the same way (release the held tail, report the total), so that
sample accounting means one thing whichever model spoke.  Not thread-safe:
driven by the one unit of its stream in flight.
"""

from __future__ import annotations

import numpy as np
from streamvox.engine.audio.crossfade import SeamSmoother
from streamvox.engine.events import AudioChunk, EngineEvent, StreamDone


class StreamOutput:
    """Seam smoothing for one stream at its model's ``sample_rate``."""

    def __init__(self, stream_id: str, sample_rate: int, seam_ms: float) -> None:
        self.stream_id = stream_id
        self.smoother = SeamSmoother(int(round(sample_rate * seam_ms / 1000)))

    def chunk(self, pcm: np.ndarray) -> list[EngineEvent]:
        """``pcm`` as an audio event, or nothing if it is empty."""
        return [AudioChunk(self.stream_id, pcm)] if len(pcm) else []

    def finish(self) -> list[EngineEvent]:
        """No segment left and the input is finished: the held tail, then ``StreamDone``.

        Its ``compute_s`` is summed by the engine thread once the unit is back."""
        events = self.chunk(self.smoother.finish())
        events.append(StreamDone(self.stream_id, self.smoother.samples_out, 0.0))
        return events

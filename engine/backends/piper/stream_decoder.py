"""Drive a voice's streaming decoder (``stream_graph``): sessions per voice, state per stream.

:class:`StreamingDecoder` holds the step and final graphs' sessions, on the fast
(multi-threaded) and lean (one-thread) options as the windowed decoder does; onnxruntime
sessions are thread-safe, so one serves every stream.  :class:`DecoderStream` is one run of
latent frames: it carries the graphs' states from call to call and hands out the samples
each call completes.  Not thread-safe: one stream's unit drives it at a time.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from streamvox.engine.backends.piper.stream_graph import FIRST_INPUT, StreamingGraph

_FIRST = np.ones(1, dtype=np.int64)
_LATER = np.zeros(1, dtype=np.int64)


class StreamingDecoder:
    """The sessions of one voice's streaming decoder."""

    def __init__(
        self,
        graph: StreamingGraph,
        z_input: str,
        fast: ort.SessionOptions,
        lean: ort.SessionOptions,
        has_speaker_input: bool,
    ) -> None:
        providers = ["CPUExecutionProvider"]
        self.graph = graph
        self.z_input = z_input
        self.has_speaker_input = has_speaker_input
        self._sessions = {
            (final, urgent): ort.InferenceSession(graph.final if final else graph.step, options, providers=providers)
            for final in (False, True)
            for urgent, options in ((True, fast), (False, lean))
        }
        self._outputs = [
            self._sessions[False, False].get_outputs()[0].name,
            *(s.next_name for s in graph.states),
        ]

    @property
    def lookahead_frames(self) -> int:
        """Frames fed past a sample before a non-final call can return it."""
        return -(-self.graph.lag // self.graph.rate)

    def stream(self, speaker: int = 0) -> DecoderStream:
        return DecoderStream(self, speaker)

    def shrink(self, z_channels: int, run_options: ort.RunOptions) -> None:
        """One short call on each session with ``run_options`` (the voice's arena shrinkage)."""
        z = np.zeros((z_channels, self.graph.warmup_frames), dtype=np.float32)
        states = [spec.start() for spec in self.graph.states]
        for final, urgent in self._sessions:
            self.run(z, states, True, final, urgent, 0, run_options)

    def run(
        self,
        z: np.ndarray,
        states: list[np.ndarray],
        first: bool,
        final: bool,
        urgent: bool,
        speaker: int,
        run_options: ort.RunOptions | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One call: samples and the states to carry (see ``stream_graph``)."""
        feeds = {
            self.z_input: np.ascontiguousarray(z[np.newaxis], dtype=np.float32),
            FIRST_INPUT: _FIRST if first else _LATER,
        }
        feeds.update((spec.name, state) for spec, state in zip(self.graph.states, states, strict=True))
        if self.has_speaker_input:
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        audio, *carried = self._sessions[final, urgent].run(self._outputs, feeds, run_options)
        return audio.reshape(-1), carried


class DecoderStream:
    """One run of latent frames through a :class:`StreamingDecoder`, call by call.

    The samples of all calls, in order, are the one-shot decode of all the frames fed (to float
    rounding): a non-final call returns every sample it can complete, which stops
    ``lag`` samples short of its last frame; the final call returns the rest."""

    def __init__(self, decoder: StreamingDecoder, speaker: int = 0) -> None:
        self.decoder = decoder
        self.speaker = speaker
        self.frames = 0
        """Frames fed so far (held ones included)."""
        self.samples = 0
        """Samples returned so far."""
        self.finished = False
        self._states = [spec.start() for spec in decoder.graph.states]
        self._held: np.ndarray | None = None
        self._started = False

    def feed(self, z: np.ndarray, final: bool = False, urgent: bool = False) -> np.ndarray:
        """Decode ``z`` (``(channels, frames)``) after the frames fed before; ``final`` ends the
        stream.  A first call shorter than the graph's warm-up is held for the next one."""
        if self.finished:
            raise ValueError("the stream has ended")
        self.frames += z.shape[1]
        if self._held is not None:
            z = np.concatenate([self._held, z], axis=1)
            self._held = None
        first = not self._started
        if first and not final and z.shape[1] < self.decoder.graph.warmup_frames:
            self._held = z
            return np.zeros(0, dtype=np.float32)
        if z.shape[1] == 0 and not final:
            return np.zeros(0, dtype=np.float32)
        audio, self._states = self.decoder.run(z, self._states, first, final, urgent, self.speaker)
        self._started = True
        self.samples += audio.shape[0]
        self.finished = final
        return audio

    def available_through(self) -> int:
        """Samples a non-final call can have returned once :attr:`frames` are fed."""
        return max(0, self.frames * self.decoder.graph.rate - self.decoder.graph.lag)

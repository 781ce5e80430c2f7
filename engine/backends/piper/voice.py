"""A Piper voice split into an encoder (phonemes -> prior frames), a flow and a decoder.

The encoder runs once per text segment; the flow (prior ``z_p`` -> latent
``z``) and the HiFi-GAN decoder (``z`` -> audio) then run on windows of frames
padded with context frames on both sides, keeping only the window's own
output.  With 24 flow and 10 decoder context frames this reproduces the
one-shot synthesis at > 100 dB SNR on the bundled voice, and the first audio
needs only the encoder plus one small window.  The encoder always runs on one
thread: its many small operators gain little from a second one (measured on
the bundled voice: a four-word first span 6.4-6.6 ms on one thread, 6.7-7.3 on
two, at 15-40 % more CPU; a whole sentence 20.7 against 17 ms, at 30 % more).
``onnxruntime`` sessions are
thread-safe and release the GIL: the engine's workers run windows of different
streams on one voice at once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from streamvox.engine.api import VoiceLoadError
from streamvox.engine.backends.piper.graph import (
    DURATIONS_OUTPUT,
    NOISE_DP,
    PRIOR_FACTOR,
    PRIOR_MEAN,
    Z_MASK,
    Z_OUTPUT,
    Z_PRIOR,
    prior_sample,
    split_piper_graph,
)
from streamvox.engine.backends.piper.stream_decoder import StreamingDecoder
from streamvox.engine.backends.piper.stream_graph import NotStreamable, streaming_decoder
from streamvox.engine.text.phonemes import phoneme_ids_with_sources, phonemize

log = logging.getLogger(__name__)

HOP_LENGTH = 256
"""Samples per latent frame in Piper's HiFi-GAN (8 x 8 x 2 x 2 upsampling)."""
_HONOURS = frozenset({"speed", "speaker", "seed", "noise"})
STREAM_BLOCK_FROM_RATE = 8
"""The streaming decoder runs its layers of this many samples per frame or more in overlap-save
blocks (``stream_graph``; measured with ``scripts/stream_decoder_timing.py``: 8 and 64 cost
within 3 % of each other, carrying every convolution 12-20 % more)."""


@dataclass(frozen=True)
class PiperVoiceConfig:
    """What a voice's ``.onnx.json`` says that synthesis needs."""

    sample_rate: int
    espeak_voice: str
    phoneme_id_map: Mapping[str, Sequence[int]]
    language: str
    num_speakers: int = 1
    noise_scale: float = 0.667
    """Prior noise: expressiveness of each frame."""
    length_scale: float = 1.0
    """Duration multiplier: > 1 is slower speech."""
    noise_w: float = 0.8
    """Duration-predictor noise: rhythm variation."""

    @classmethod
    def from_json(cls, path: Path) -> PiperVoiceConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            inference = raw.get("inference", {})
            if raw.get("phoneme_type", "espeak") != "espeak":
                raise VoiceLoadError(f"{path}: phoneme_type {raw['phoneme_type']!r} is not supported (espeak only)")
            return cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw["espeak"]["voice"]),
                phoneme_id_map={k: list(v) for k, v in raw["phoneme_id_map"].items()},
                language=str(raw.get("language", {}).get("code", raw["espeak"]["voice"])),
                num_speakers=int(raw.get("num_speakers", 1)),
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
            )
        except (OSError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, VoiceLoadError):
                raise
            raise VoiceLoadError(f"{path}: not a Piper voice config ({exc})") from exc


@dataclass(frozen=True)
class FrontOutput:
    """The prior frames of one segment and how many frames each phoneme id lasts."""

    z_p: np.ndarray
    """float32, shape (channels, frames): the prior sample the flow turns into ``z``."""
    durations: np.ndarray
    """int, one entry per phoneme id."""

    @property
    def frames(self) -> int:
        return int(self.z_p.shape[1])


class PiperVoice:
    """One loaded Piper voice; see the module docstring for the split."""

    kind = "piper"

    def __init__(
        self,
        voice_id: str,
        model_path: Path,
        config: PiperVoiceConfig,
        threads: int = 0,
        stream_threads: int = 1,
        stream_decode: bool = True,
    ) -> None:
        """``threads`` serve the latency-critical runs (a stream's first windows through the flow
        and the decoder; 0 means one per core); ``stream_threads`` serve the encoder and the
        steady windows after the first, where a single thread per run wastes nothing on
        synchronisation and leaves the other cores free.  ``stream_decode``: decode a segment's
        windows with the streaming decoder (``stream_graph``) where the voice's decoder allows
        it, else with context frames either side of each window."""
        self.id = voice_id
        self.model_path = model_path
        self.config = config
        try:
            split = split_piper_graph(model_path.read_bytes())
        except OSError as exc:
            raise VoiceLoadError(f"{model_path}: cannot read ({exc})") from exc
        self.has_speaker_input = split.has_speaker_input
        factors = (PRIOR_FACTOR.format(i) for i in range(split.prior_factors))
        self._encoder_outputs = [PRIOR_MEAN, *factors, DURATIONS_OUTPUT]
        self.z_channels = split.z_channels
        # No session spins: each session has its own worker pool, and a pool spinning
        # after its run steals the cores the next session's run needs (measured: the
        # second window of a stream took 135 ms with spinning, 75 ms without).
        fast, lean = _session_options(threads), _session_options(stream_threads)
        providers = ["CPUExecutionProvider"]
        self._encoder = ort.InferenceSession(split.encoder, lean, providers=providers)
        self._flow = {
            True: ort.InferenceSession(split.flow, fast, providers=providers),
            False: ort.InferenceSession(split.flow, lean, providers=providers),
        }
        self._decoder = {
            True: ort.InferenceSession(split.decoder, fast, providers=providers),
            False: ort.InferenceSession(split.decoder, lean, providers=providers),
        }
        self.streaming: StreamingDecoder | None = None
        """The decoder run call by call with its convolutions' history carried (``None``: the voice
        decodes windows with context frames)."""
        if stream_decode:
            try:
                graph = streaming_decoder(split.decoder, Z_OUTPUT, STREAM_BLOCK_FROM_RATE)
            except NotStreamable as exc:
                log.info("voice %s decodes windows with context frames: %s", voice_id, exc)
            else:
                self.streaming = StreamingDecoder(graph, Z_OUTPUT, fast, lean, self.has_speaker_input)

    def warm_up(self) -> None:
        """Run every session once on typical shapes, so the first client does not pay for
        onnxruntime's first-run allocations (measured: a cold first utterance underran)."""
        front = self.front(self.text_to_ids("Warming up the voice, one window at a time."), None)
        for urgent in (True, False):
            z = self.flow_window(front.z_p, 0, min(front.frames, 64), 24, urgent=urgent)
            self.decode_window(z, 0, min(z.shape[1], 32), 12, urgent=urgent)
            if self.streaming is not None:
                stream = self.streaming.stream()
                half = z.shape[1] // 2
                stream.feed(z[:, :half], urgent=urgent)
                stream.feed(z[:, half:], final=True, urgent=urgent)

    def trim_memory(self) -> None:
        """Shrink every session's arena: one tiny run each with arena shrinkage on frees the
        regions onnxruntime kept for the largest shapes seen (measured: a server's RSS went
        from 340 MB to a plateau near 800 MB after a few long inputs; see ``bench soak``)."""
        front = self.front(self.text_to_ids("Hi."), None, run_options=_SHRINK_ARENA)
        for urgent in (True, False):
            z = self.flow(front.z_p[:, :8], urgent=urgent, run_options=_SHRINK_ARENA)
            self.decode(z, urgent=urgent, run_options=_SHRINK_ARENA)
        if self.streaming is not None:
            self.streaming.shrink(self.z_channels, _SHRINK_ARENA)

    @classmethod
    def load(
        cls,
        model_path: str | Path,
        voice_id: str | None = None,
        threads: int = 0,
        stream_threads: int = 1,
        stream_decode: bool = True,
    ) -> PiperVoice:
        """Load ``model.onnx`` with its ``model.onnx.json`` beside it."""
        model = Path(model_path)
        config_file = model.with_name(model.name + ".json")
        if not model.is_file():
            raise VoiceLoadError(f"no voice model at {model}")
        if not config_file.is_file():
            raise VoiceLoadError(f"no voice config at {config_file}")
        config = PiperVoiceConfig.from_json(config_file)
        voice_id = voice_id or model.name.removesuffix(".onnx")
        return cls(voice_id, model, config, threads, stream_threads, stream_decode)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def language(self) -> str:
        return self.config.language

    @property
    def num_speakers(self) -> int:
        return self.config.num_speakers

    @property
    def length_scale(self) -> float:
        return self.config.length_scale

    @property
    def honours(self) -> frozenset[str]:
        return _HONOURS

    def text_to_ids(self, text: str) -> list[int]:
        """Phoneme ids of ``text``, all its sentences joined (empty if nothing speakable)."""
        return self.ids_with_sources(self.phonemes(text))[0]

    def phonemes(self, text: str) -> list[str]:
        """The code points espeak-ng reads ``text`` as, all its sentences joined (empty if
        nothing speakable)."""
        flat = [p for sentence in phonemize(text, self.config.espeak_voice) for p in sentence]
        return flat if any(p.strip() for p in flat) else []

    def ids_with_sources(self, phonemes: Sequence[str]) -> tuple[list[int], list[int]]:
        """The ids of ``phonemes`` and, per id, the phoneme it came from (see
        :func:`phoneme_ids_with_sources`); nothing for nothing."""
        if not phonemes:
            return [], []
        return phoneme_ids_with_sources(phonemes, self.config.phoneme_id_map)

    def front(
        self,
        ids: Sequence[int],
        rng: np.random.Generator | None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w: float | None = None,
        speaker: int = 0,
        run_options: ort.RunOptions | None = None,
    ) -> FrontOutput:
        """Run the encoder on one segment's ids.

        Noise comes from ``rng`` (``None`` means noise off: zeros), drawn in a
        fixed order so a seeded stream is reproducible.  The prior's noise is
        drawn once the durations say how many frames it needs.
        """
        n = len(ids)
        if n == 0:
            raise ValueError("front needs at least one phoneme id")
        cfg = self.config
        scales = np.array(
            [
                cfg.noise_scale if noise_scale is None else noise_scale,
                cfg.length_scale if length_scale is None else length_scale,
                cfg.noise_w if noise_w is None else noise_w,
            ],
            dtype=np.float32,
        )
        noise_dp = _noise(rng, (1, 2, n))
        z_seed = None if rng is None else int(rng.integers(0, 2**63 - 1))
        feeds = {
            "input": np.asarray([ids], dtype=np.int64),
            "input_lengths": np.array([n], dtype=np.int64),
            "scales": scales,
            NOISE_DP: noise_dp,
        }
        if self.has_speaker_input:
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        mean, *factors, durations = self._encoder.run(self._encoder_outputs, feeds, run_options)
        noise = _prior_noise(z_seed, self.z_channels, mean.shape[2])
        z_p = prior_sample(mean, factors, noise)
        return FrontOutput(z_p=z_p[0], durations=durations.reshape(-1).astype(np.int64))

    def flow(
        self, z_p: np.ndarray, speaker: int = 0, urgent: bool = True, run_options: ort.RunOptions | None = None
    ) -> np.ndarray:
        """Prior frames ``(channels, frames)`` to latent frames ``z`` of the same shape."""
        feeds = {
            Z_PRIOR: np.ascontiguousarray(z_p[np.newaxis], dtype=np.float32),
            Z_MASK: np.ones((1, 1, z_p.shape[1]), dtype=np.float32),
        }
        if self.has_speaker_input:
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        return self._flow[urgent].run(None, feeds, run_options)[0][0]

    def flow_window(
        self, z_p: np.ndarray, start: int, end: int, context: int, speaker: int = 0, urgent: bool = True
    ) -> np.ndarray:
        """``z`` for frames ``[start, end)``, computed with ``context`` prior frames either side."""
        lo = max(0, start - context)
        hi = min(z_p.shape[1], end + context)
        z = self.flow(z_p[:, lo:hi], speaker, urgent)
        return z[:, start - lo : end - lo]

    def synthesize(self, ids: Sequence[int], rng: np.random.Generator | None = None) -> np.ndarray:
        """One-shot synthesis of a segment (the reference the windowed path must match)."""
        front = self.front(ids, rng)
        return self.decode(self.flow(front.z_p))

    def decode(
        self, z: np.ndarray, speaker: int = 0, urgent: bool = True, run_options: ort.RunOptions | None = None
    ) -> np.ndarray:
        """HiFi-GAN decode of latent frames ``(channels, frames)`` to float32 samples."""
        feeds = {Z_OUTPUT: np.ascontiguousarray(z[np.newaxis], dtype=np.float32)}
        if self.has_speaker_input:
            feeds["sid"] = np.array([speaker], dtype=np.int64)
        return self._decoder[urgent].run(None, feeds, run_options)[0].reshape(-1)

    def decode_window(
        self, z: np.ndarray, start: int, end: int, context: int, speaker: int = 0, urgent: bool = True
    ) -> np.ndarray:
        """Samples of frames ``[start, end)`` decoded with ``context`` frames either side."""
        lo = max(0, start - context)
        hi = min(z.shape[1], end + context)
        audio = self.decode(z[:, lo:hi], speaker, urgent)
        offset = (start - lo) * HOP_LENGTH
        return audio[offset : offset + (end - start) * HOP_LENGTH]


_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def _session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _noise(rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
    if rng is None:
        return np.zeros(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32)


def _prior_noise(seed: int | None, channels: int, frames: int) -> np.ndarray:
    """Prior noise ``(1, channels, frames)``, drawn frame-major: frame ``t`` is the same whatever
    the length (a seed's stream of draws, as when a longer buffer was drawn and sliced)."""
    if seed is None:
        return np.zeros((1, channels, frames), dtype=np.float32)
    draws = np.random.default_rng(seed).standard_normal((frames, channels), dtype=np.float32)
    return np.ascontiguousarray(draws.T[np.newaxis])

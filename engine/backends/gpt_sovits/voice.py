"""A GPT-SoVITS v2 voice the server can speak with, loaded from a directory the user gives.

The directory holds ``voice.json`` and the files it names (paths relative to it)::

    {
      "id": "narrator",                      # optional: the directory's name
      "gpt_weights": "narrator-e15.ckpt",     # s1 (text-to-semantic)
      "sovits_weights": "narrator_e8.pth",    # s2 (SoVITS v2)
      "reference_audio": "ref.wav",           # 3-10 s of the speaker
      "reference_text": "What ref.wav says.",
      "prompt_tokens": "ref.semantic.npy",    # ref.wav's semantic tokens (int array), or
      "cnhubert": "chinese-hubert-base",      # a HuBERT model directory to extract them with
      "language": "en",
      "sampling": {"top_k": 15, "top_p": 1.0, "temperature": 1.0, "repetition_penalty": 1.35},
      "noise_scale": 0.5, "max_streams": 4, "max_len": 1024, "int8": false, "bf16_vocoder": false,
      "bf16_cache": false, "int8_cache": false,
      "device": "cpu",                       # or "cuda", "cuda:1"
      "dtype": "float32",                    # T2S weights and cache; "bfloat16" on a GPU
      "step": "variable"                     # or a fixed-shape step: "eager", "compile", "cuda-graph", ...
    }

Unknown keys are errors.  The reference's semantic tokens are read from
``prompt_tokens`` if given, else extracted at load time with the user's
HuBERT model (``cnhubert``, a local Hugging Face directory; the reference must
then last 3 to 10 s, as upstream requires); nothing is downloaded.

``device`` puts T2S and SoVITS on one torch device (HuBERT, used once at load,
stays on the CPU).  ``step`` picks T2S's decode step: ``variable`` (any set of
slots; on a CPU in float32 the fused C kernels attend each slot over its own
length, :mod:`~streamvox.engine.ar.cpu_attention`; best on a CPU) or one of
:data:`~streamvox.engine.ar.fixed_step.MODES`, which step every slot at fixed
shapes, compiled or replayed as a CUDA graph (what a GPU wants).

The voice owns one :class:`T2SDecoder` whose cache has ``max_streams`` slots.
The backend hands the slots out (a :class:`~streamvox.engine.ar.slots.SlotPool`
per voice) and runs one T2S call per voice at a time (a scheduler lane); the
voice itself keeps no scheduling state.  The SoVITS decoder is immutable and
decodes chunks for several streams at once.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streamvox.engine.api import VoiceLoadError
from streamvox.engine.ar.device import check_device
from streamvox.engine.ar.fixed_step import FixedShapeStep, check_step
from streamvox.engine.ar.generate import TokenModel, TokenStream, advance, choose_all
from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
from streamvox.engine.ar.threads import unit_threads
from streamvox.engine.ar.token_vocoder import ChunkSchedule, StreamingVocoder
from streamvox.engine.audio.recording import read_mono, resample
from streamvox.engine.backends.gpt_sovits.checkpoint import CheckpointError, load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder
from streamvox.engine.backends.gpt_sovits.text import english_phoneme_ids
from streamvox.engine.backends.gpt_sovits.vits import SoVITSDecoder, UtteranceDecoder, warm_up_lengths
from streamvox.engine.backends.gpt_sovits.words import word_weights as phone_weights
from streamvox.engine.text.words import SpokenWord, spoken_words

_KEYS = {
    "id", "gpt_weights", "sovits_weights", "reference_audio", "reference_text", "prompt_tokens", "cnhubert",
    "language", "sampling", "noise_scale", "max_streams", "max_len", "int8", "bf16_vocoder", "bf16_cache", "chunks",
    "int8_cache", "device", "dtype", "step",
}  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class GptSovitsVoiceConfig:
    """Per-voice settings from ``voice.json`` (with GPT-SoVITS's defaults)."""

    language: str = "en"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    noise_scale: float = 0.5
    """SoVITS prior noise (0: deterministic given the tokens)."""
    max_streams: int = 4
    """Streams generating at once: the T2S cache's slots."""
    max_len: int = 1024
    """Cache positions per slot: reference text + target text + prompt + generated tokens."""
    int8: bool = False
    """int8 T2S linears: ~1.5x faster on a CPU; tokens may differ from fp32."""
    bf16_vocoder: bool = False
    """HiFi-GAN in bfloat16: ~2x faster SoVITS decode on CPUs with AMX/AVX512-BF16, ~44 dB SNR."""
    bf16_cache: bool = False
    """T2S keys and values cached in bfloat16 (float32 on the CPU, ``step`` variable: the fused kernel
    reads it): half the bytes a step reads, ~1.3x faster at batch 16; tokens may differ from float32."""
    int8_cache: bool = False
    """T2S keys and values cached in int8, a float32 scale per row (same conditions as ``bf16_cache``,
    and not with it): 36 bytes a row where bf16 reads 64, integer scores on AVX-512 VNNI; the
    largest rounding of the three caches, so tokens may differ from float32."""
    chunks: ChunkSchedule = field(default_factory=ChunkSchedule)
    num_speakers: int = 1
    length_scale: float = 1.0
    device: str = "cpu"
    """The torch device T2S and SoVITS run on."""
    dtype: str = "float32"
    """T2S weights and cache: ``float32`` or ``bfloat16`` (tokens may then differ from float32)."""
    step: str = "variable"
    """T2S's decode step: one of :data:`~streamvox.engine.ar.fixed_step.STEPS`."""

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        check_step(self.step, self.device)
        if self.language != "en":
            raise ValueError(f"only English GPT-SoVITS voices are supported, not {self.language!r}")
        if self.max_streams < 1 or self.max_len < 64:
            raise ValueError("max_streams must be >= 1 and max_len >= 64")
        if self.noise_scale < 0:
            raise ValueError("noise_scale must be >= 0")
        for name in ("bf16_cache", "int8_cache"):
            if getattr(self, name) and (self.device != "cpu" or self.dtype != "float32" or self.step != "variable"):
                raise ValueError(f'{name} is for device "cpu", dtype "float32" and step "variable"')
        if self.bf16_cache and self.int8_cache:
            raise ValueError("choose one of bf16_cache and int8_cache")

    @property
    def cache_dtype(self) -> torch.dtype | None:
        """The T2S cache's element type, or ``None`` for the weights' own."""
        return torch.int8 if self.int8_cache else torch.bfloat16 if self.bf16_cache else None


@dataclass
class ARSegment:
    """One text segment of one stream: its slot, its token stream and its vocoder.

    Touched by one thread at a time (the engine's unit discipline)."""

    index: int
    slot: int
    """Its T2S cache slot while it generates; -1 once the slot went back to the pool."""
    tokens: TokenStream
    vocoder: StreamingVocoder
    policy: EosPolicy
    """Its end-of-speech rule; the step cap is what the slot's cache has room for after prefill."""

    @property
    def generating(self) -> bool:
        return not self.tokens.done


class GptSovitsVoice:
    """See the module docstring."""

    kind = "gpt-sovits"
    honours = frozenset({"seed", "noise"})
    """``speed`` is not adjustable (the model sets the pace) and there is one speaker."""
    num_speakers = 1
    length_scale = 1.0

    def __init__(
        self,
        voice_id: str,
        t2s: T2SDecoder,
        sovits: SoVITSDecoder,
        reference_ids: list[int],
        prompt_tokens: list[int],
        speaker: torch.Tensor,
        config: GptSovitsVoiceConfig,
    ) -> None:
        self.id = voice_id
        self.t2s = t2s
        self.sovits = sovits
        self.reference_ids = reference_ids
        self.prompt_tokens = torch.tensor(prompt_tokens, dtype=torch.long)
        self.speaker = speaker
        self.config = config
        self.sample_rate = sovits.config.sampling_rate
        self.eos = t2s.config.eos
        self.stepper: TokenModel = t2s if config.step == "variable" else FixedShapeStep(t2s, config.step)
        """What runs T2S's steps: the decoder itself, or its fixed-shape step."""

    @property
    def language(self) -> str:
        return self.config.language

    @classmethod
    def load(cls, directory: str | Path) -> GptSovitsVoice:
        """Read ``directory/voice.json`` and everything it names; errors are :class:`VoiceLoadError`."""
        root = Path(directory)
        try:
            spec = json.loads((root / "voice.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VoiceLoadError(f"{root}: cannot read voice.json ({exc})") from None
        if not isinstance(spec, dict):
            raise VoiceLoadError(f"{root}/voice.json: expected an object")
        unknown = sorted(set(spec) - _KEYS)
        if unknown:
            raise VoiceLoadError(f"{root}/voice.json: unknown keys {unknown}")
        try:
            config = _config(spec)
            for key in ("gpt_weights", "sovits_weights", "reference_audio", "reference_text"):
                if key not in spec:
                    raise ValueError(f"{key!r} is required")
            if "prompt_tokens" not in spec and "cnhubert" not in spec:
                raise ValueError("give 'prompt_tokens' (precomputed) or 'cnhubert' (a HuBERT model directory)")
            s1 = load_s1(root / spec["gpt_weights"])
            t2s_config = T2SConfig.from_checkpoint(s1.config)
            t2s = T2SDecoder(
                s1.weights,
                t2s_config,
                slots=config.max_streams,
                max_len=config.max_len,
                int8=config.int8,
                device=config.device,
                dtype=DTYPES[config.dtype],
                cache_dtype=config.cache_dtype,
            )
            sovits = SoVITSDecoder.load(
                root / spec["sovits_weights"], bf16_vocoder=config.bf16_vocoder, device=config.device
            )
            reference, reference_rate = _read_audio(root / spec["reference_audio"])
            speaker = sovits.speaker(
                sovits.reference_spectrogram(resample(reference, reference_rate, sovits.config.sampling_rate))
            )
            if "prompt_tokens" in spec:
                tokens = np.load(root / spec["prompt_tokens"], allow_pickle=False).astype(np.int64).reshape(-1)
            else:
                tokens = np.array(_extract_tokens(root / spec["cnhubert"], reference, reference_rate, sovits))
            if tokens.size == 0 or tokens.min() < 0 or tokens.max() >= t2s_config.eos:
                raise ValueError(f"prompt_tokens must be semantic tokens in 0..{t2s_config.eos - 1}")
            reference_ids = english_phoneme_ids(str(spec["reference_text"]))
        except (CheckpointError, ValueError, OSError) as exc:
            raise VoiceLoadError(f"{root}: {exc}") from None
        return cls(str(spec.get("id", root.name)), t2s, sovits, reference_ids, tokens.tolist(), speaker, config)

    @property
    def max_streams(self) -> int:
        return self.config.max_streams

    def text_ids(self, text: str) -> list[int]:
        """The v2 phoneme ids of one segment's text."""
        return english_phoneme_ids(text)

    def speakable(self, raw: str, notes: dict[str, Any]) -> str | None:
        """The normalised text of a segment (``None`` if it has no letter or digit)."""
        text, _ = spoken_words(raw)
        return text if any(c.isalnum() for c in text) else None

    def words_of(self, raw: str) -> list[SpokenWord]:
        return spoken_words(raw)[1]

    def word_weights(self, words: Sequence[SpokenWord]) -> tuple[list[float], list[float]]:
        return phone_weights(words)

    def release_slot(self, slot: int) -> None:
        self.t2s.release(slot)

    def start_segment(self, index: int, slot: int, text: str, seed: int, greedy: bool = False) -> ARSegment:
        """Prefill ``slot`` with the reference and ``text`` and the prompt (a T2S call).

        ``seed`` fixes the token draws and the vocoder noise; ``greedy`` takes the most likely
        token each step and decodes without noise (the same text always gives the same audio)."""
        target_ids = self.text_ids(text)
        phonemes = torch.tensor(self.reference_ids + target_ids, dtype=torch.long)
        room = self.config.max_len - len(phonemes) - len(self.prompt_tokens) - 1
        if room < self.config.chunks.first:
            raise ValueError(f"segment too long for the voice's max_len ({self.config.max_len})")
        first = self.t2s.prefill(slot, phonemes, self.prompt_tokens)
        sampling = SamplingParams(top_k=1, repetition_penalty=1.0) if greedy else self.config.sampling
        tokens = TokenStream.start(slot, first, self.prompt_tokens, sampling, seed)
        decoder = UtteranceDecoder(
            self.sovits,
            torch.tensor(target_ids, dtype=torch.long).reshape(1, -1),
            self.speaker,
            noise_scale=0.0 if greedy else self.config.noise_scale,
            seed=seed,
        )
        vocoder = StreamingVocoder(decoder, self.config.chunks)
        return ARSegment(index, slot, tokens, vocoder, EosPolicy(eos=self.eos, max_steps=min(1500, room)))

    def step(self, segments: Sequence[ARSegment]) -> None:
        """One token for each segment, all in one batched T2S call (a T2S call)."""
        segments = sorted(segments, key=lambda s: s.slot)  # adjacent slots are read as one view
        chosen = choose_all([s.tokens for s in segments], [s.policy for s in segments])
        for segment, token in zip(segments, chosen, strict=True):
            if token is not None:
                segment.vocoder.add([token])
        advance(self.stepper, [s.tokens for s in segments], chosen)

    def trim_memory(self) -> None:
        """Nothing to shrink: torch's CPU allocator hands freed tensors back to the C heap, which
        the engine trims itself; the KV cache is fixed-size and stays."""

    def warm_up(self) -> None:
        """A short segment end to end, then a SoVITS decode of every recurring window length, so
        no listener pays the convolution library's one-off setup for a shape (66-132 ms each at
        v2 size), on the torch thread count the engine's units run at (the setup is per count)."""
        slot = 0  # before serving: no stream holds a slot yet
        text = "Warming up."
        ids = self.text_ids(text)
        with unit_threads():
            try:
                segment = self.start_segment(0, slot, text, seed=0)
                for _ in range(4):
                    self.step([segment])
                segment.vocoder.finish()
            finally:
                self.t2s.release(slot)
            for tokens in warm_up_lengths(self.config.chunks.window_sizes()):
                self.sovits.decode([0] * tokens, ids, self.speaker)


def _section(spec: Mapping[str, Any], key: str, cls: type) -> dict[str, Any]:
    """``spec[key]``, an object whose keys must be fields of the dataclass ``cls``."""
    section = spec.get(key, {})
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(section, dict) or set(section) - set(names):
        raise ValueError(f"{key} takes {', '.join(names)}")
    return section


def _config(spec: Mapping[str, Any]) -> GptSovitsVoiceConfig:
    sampling = _section(spec, "sampling", SamplingParams)
    chunks = _section(spec, "chunks", ChunkSchedule)
    try:
        return GptSovitsVoiceConfig(
            language=str(spec.get("language", "en")),
            sampling=SamplingParams(**sampling),
            noise_scale=float(spec.get("noise_scale", 0.5)),
            max_streams=int(spec.get("max_streams", 4)),
            max_len=int(spec.get("max_len", 1024)),
            int8=bool(spec.get("int8", False)),
            bf16_vocoder=bool(spec.get("bf16_vocoder", False)),
            bf16_cache=bool(spec.get("bf16_cache", False)),
            int8_cache=bool(spec.get("int8_cache", False)),
            chunks=ChunkSchedule(**chunks),
            device=str(spec.get("device", "cpu")),
            dtype=str(spec.get("dtype", "float32")),
            step=str(spec.get("step", "variable")),
        )
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _extract_tokens(hubert_dir: Path, reference: np.ndarray, rate: int, sovits: SoVITSDecoder) -> list[int]:
    from streamvox.engine.backends.gpt_sovits.cnhubert import SAMPLE_RATE, CNHubert, reference_tokens

    audio_16k = resample(reference, rate, SAMPLE_RATE)
    return reference_tokens(CNHubert.load(hubert_dir), sovits.semantic_tokens, audio_16k)


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    """The reference recording, mixed to mono, at its own rate."""
    audio, rate = read_mono(path)
    if len(audio) < rate // 2:
        raise ValueError(f"{path.name}: the reference audio is shorter than 0.5 s")
    return audio, rate

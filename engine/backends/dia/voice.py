"""A Dia voice: the model, its DAC codec, its cache slots and an optional cloning prompt.

A voice directory (local; nothing is ever fetched)::

    config.json            transformers DiaConfig (nari-labs writes the same fields)
    model.safetensors      DiaForConditionalGeneration weights (transformers layout), or
    *.pth                  nari-labs' own checkpoint (read by the restricted unpickler)
    dac/config.json        transformers DacConfig (44.1 kHz)
    dac/model.safetensors  DacModel weights (plain or weight-normalised)
    prompt.wav, prompt.txt optional: audio to clone and its transcript ("[S1] ...")
    voice.json             optional: {"id", "language", "max_streams": 2, "max_rows": 3072,
                           "max_text_bytes": 512, "dtype": "float32"|"bfloat16",
                           "device": "cpu"|"cuda"|"cuda:N", "step": "variable"|"cuda-graph"|...,
                           "sampling": {temperature, top_p, top_k, guidance_scale, guidance_top_k}}

Each request (one text segment of one stream) holds one slot of the voice's
:class:`DecoderCache`: two rows, conditional and unconditional.  A prompt is
encoded with the DAC encoder once, at load time, and teacher-forced into each
request's rows at its prefill (its transcript goes before the request's text).
:meth:`DiaVoice.step` advances any set of requests by one decoder row in one
batched call.  The model, its caches and the DAC live on ``device``; the
sampler runs on the CPU, so each step's logits come back to it.  ``step``
picks the decoder's step: ``variable`` (attends up to the longest live row;
best on a CPU) or a fixed-shape mode of
:data:`~streamvox.engine.ar.fixed_step.MODES` over every cache row (compiled,
or a CUDA graph: what a GPU wants).  Not
thread-safe: the backend runs one model call per voice at a time (its lane);
a request's state is touched by one unit at a time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streamvox.engine.api import VoiceLoadError
from streamvox.engine.ar.blocked_linear import use_blocked_linears
from streamvox.engine.ar.checkpoint import CheckpointError
from streamvox.engine.ar.device import check_device
from streamvox.engine.ar.fixed_step import FixedShapeStep, check_step
from streamvox.engine.ar.threads import unit_threads
from streamvox.engine.ar.token_vocoder import ChunkSchedule, StreamingVocoder
from streamvox.engine.audio.recording import read_mono, resample
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacCodec, DacConfig, fold_weight_norm
from streamvox.engine.backends.dia.model import CachedDecoder, DecoderCache, DiaNetwork
from streamvox.engine.backends.dia.sampling import DiaDecodeState, DiaSampling
from streamvox.engine.backends.dia.text import has_speech, last_speaker, speaker_text_ids, with_speaker
from streamvox.engine.backends.dia.weights import read_original
from streamvox.engine.backends.dia.words import speaker_free_words
from streamvox.engine.backends.dia.words import word_weights as letter_weights
from streamvox.engine.text.words import SpokenWord

_VOICE_KEYS = frozenset(
    {"id", "language", "max_streams", "max_rows", "max_text_bytes", "dtype", "device", "step", "sampling", "chunks"}
)
DAC_CONTEXT = 10
"""Frames of context each side of a DAC window: the decoder's receptive field (exact to float error)."""
DAC_WINDOWS = ChunkSchedule(
    first=8, growth=2.0, cap=64, lookahead=DAC_CONTEXT, left_context=DAC_CONTEXT, overlap=0, bucket=1
)
"""DAC windows of 8, 16, 32, then 64 frames, with the receptive field of context each side."""


def slot_rows(slot: int) -> list[int]:
    """The cache rows of ``slot``: its conditional row, then its unconditional one."""
    return [2 * slot, 2 * slot + 1]


@dataclass(frozen=True)
class DiaVoiceConfig:
    """Serving settings of a Dia voice (``voice.json``)."""

    language: str = "en"
    max_streams: int = 2
    """Requests generating at once (cache slots; each is two decoder rows)."""
    max_rows: int = 3072
    """Decoder rows a request may generate (the 15-row tail included)."""
    max_text_bytes: int = 512
    """Prompt transcript plus segment text, in bytes, that the cross-attention cache holds."""
    dtype: str = "float32"
    device: str = "cpu"
    """The torch device the model, its caches and the DAC run on."""
    step: str = "variable"
    """The decoder's step: one of :data:`~streamvox.engine.ar.fixed_step.STEPS`."""
    sampling: DiaSampling = field(default_factory=DiaSampling)
    chunks: ChunkSchedule = DAC_WINDOWS

    def __post_init__(self) -> None:
        if self.max_streams < 1 or self.max_rows < 32 or self.max_text_bytes < 16:
            raise ValueError("max_streams must be >= 1, max_rows >= 32 and max_text_bytes >= 16")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        check_device(self.device)
        check_step(self.step, self.device)

    @classmethod
    def from_json(cls, spec: Mapping[str, Any]) -> DiaVoiceConfig:
        unknown = set(spec) - _VOICE_KEYS
        if unknown:
            raise ValueError(f"unknown voice.json keys: {', '.join(sorted(unknown))}")
        sampling = spec.get("sampling", {})
        known = {f.name for f in fields(DiaSampling)}
        if not isinstance(sampling, Mapping) or set(sampling) - known:
            raise ValueError(f"sampling takes {', '.join(sorted(known))}")
        max_rows = int(spec.get("max_rows", 3072))
        return cls(
            language=str(spec.get("language", "en")),
            max_streams=int(spec.get("max_streams", 2)),
            max_rows=max_rows,
            max_text_bytes=int(spec.get("max_text_bytes", 512)),
            dtype=str(spec.get("dtype", "float32")),
            device=str(spec.get("device", "cpu")),
            step=str(spec.get("step", "variable")),
            sampling=DiaSampling(**{"max_rows": max_rows, **sampling}),
            chunks=_chunks(spec.get("chunks", {})),
        )


def _chunks(spec: Any) -> ChunkSchedule:
    """The DAC window schedule: ``first``, ``growth`` and ``cap`` (frames) are the voice's to set;
    the context either side is the decoder's receptive field, so the streamed audio stays exact."""
    if not isinstance(spec, Mapping) or set(spec) - {"first", "growth", "cap"}:
        raise ValueError("chunks takes first, growth and cap (frames)")
    return replace(DAC_WINDOWS, **{k: (float(v) if k == "growth" else int(v)) for k, v in spec.items()})


class DacFrameDecoder:
    """The :class:`~streamvox.engine.ar.token_vocoder.TokenDecoder` of a Dia request: a token is one
    frame of codebook ids; ``decode`` runs the DAC over a window of frames (no noise, no state)."""

    def __init__(self, codec: DacCodec) -> None:
        self.codec = codec

    @property
    def samples_per_token(self) -> int:
        return self.codec.config.hop

    def decode(self, tokens: Sequence[tuple[int, ...]], first_token: int, keep_from: int = 0) -> np.ndarray:
        """The whole window is run: the schedule's left context is the DAC's receptive field."""
        codes = torch.tensor(list(tokens), dtype=torch.long, device=self.codec.device).T[None]
        audio = self.codec.decode(codes)[0].float().cpu().numpy()
        return audio[keep_from * self.samples_per_token :]


@dataclass(eq=False)
class DiaRequest:
    """One segment being generated: its slot, its decode state and its streamed audio."""

    index: int
    slot: int
    """Its cache slot while it generates; -1 once the slot went back."""
    state: DiaDecodeState
    vocoder: StreamingVocoder
    frames_fed: int = 0

    @property
    def generating(self) -> bool:
        return not self.state.done

    @property
    def rows(self) -> list[int]:
        return slot_rows(self.slot)

    def feed_vocoder(self) -> None:
        """Hand the vocoder the frames completed since the last call."""
        frames = self.state.frames()
        if len(frames) > self.frames_fed:
            self.vocoder.add([tuple(int(c) for c in frame) for frame in frames[self.frames_fed :]])
            self.frames_fed = len(frames)


class DiaVoice:
    """See the module docstring."""

    kind = "dia"
    honours = frozenset({"seed", "noise"})
    """``noise: false`` generates greedily; speakers are chosen in the text (``[S1]``/``[S2]``)."""
    num_speakers = 1
    length_scale = 1.0

    def __init__(
        self,
        voice_id: str,
        network: DiaNetwork,
        codec: DacCodec,
        config: DiaVoiceConfig,
        prompt_codes: torch.Tensor | None = None,
        prompt_text: str = "",
    ) -> None:
        self.id = voice_id
        self.network = network
        self.codec = codec
        self.config = config
        self.prompt_codes = prompt_codes
        """``(frames, channels)`` DAC codes of the cloning prompt, or ``None``."""
        self.prompt_text = prompt_text
        prompt_rows = 0 if prompt_codes is None else len(prompt_codes)
        self.cache: DecoderCache = network.new_cache(
            2 * config.max_streams, config.max_rows + prompt_rows + 1, config.max_text_bytes
        )
        self.frame_decoder = DacFrameDecoder(codec)
        self.stepper = (
            None if config.step == "variable" else FixedShapeStep(CachedDecoder(network, self.cache), config.step)
        )
        """The fixed-shape step over every cache row, or ``None`` for the network's variable one."""

    @property
    def sample_rate(self) -> int:
        return self.codec.config.sample_rate

    @property
    def language(self) -> str:
        return self.config.language

    @classmethod
    def load(cls, directory: str | Path) -> DiaVoice:
        """Read a voice directory (see the module docstring); errors are :class:`VoiceLoadError`."""
        root = Path(directory)
        try:
            spec = json.loads((root / "voice.json").read_text()) if (root / "voice.json").exists() else {}
            if not isinstance(spec, dict):
                raise ValueError("voice.json must hold an object")
            config = DiaVoiceConfig.from_json(spec)
            model_config = DiaConfig.from_json(json.loads((root / "config.json").read_text()))
            dac_config = DacConfig.from_json(json.loads((root / "dac" / "config.json").read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise VoiceLoadError(f"{root}: not a Dia voice directory ({exc})") from None
        if dac_config.codebooks != model_config.decoder.channels:
            raise VoiceLoadError(
                f"{root}: the DAC has {dac_config.codebooks} codebooks, "
                f"the model {model_config.decoder.channels} channels"
            )
        dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
        network = DiaNetwork(model_config)
        _fill(network, _model_weights(root, model_config), root)
        network.to(device=config.device, dtype=dtype).eval()
        if torch.device(config.device).type == "cpu":
            # The decoder's fp32 linears as column blocks (several per thread: measured best at Dia's
            # widths), where a step's few rows are otherwise multiplied on one thread; bf16 stays plain
            # (faster so), and so does the encoder (once per request, over many rows).
            use_blocked_linears(network, blocks_per_thread=4, skip=("model.encoder",))
        codec = DacCodec(dac_config)
        _fill(codec, fold_weight_norm(_safetensors(root / "dac" / "model.safetensors")), root / "dac")
        codec.to(config.device).eval()
        prompt_codes, prompt_text = None, ""
        if (root / "prompt.wav").exists():
            prompt_codes, prompt_text = _read_prompt(root, codec)
        return cls(str(spec.get("id", root.name)), network, codec, config, prompt_codes, prompt_text)

    def text_ids(self, text: str) -> torch.Tensor:
        """The encoder's input for ``text``: the prompt transcript and ``text`` as speaker-tagged bytes."""
        joined = f"{self.prompt_text} {text}".strip() if self.prompt_text else text
        ids = speaker_text_ids(joined)
        if len(ids) > self.config.max_text_bytes:
            limit = self.config.max_text_bytes
            raise ValueError(f"text of {len(ids)} bytes exceeds this voice's max_text_bytes ({limit})")
        return torch.tensor(ids, dtype=torch.long)

    @property
    def max_streams(self) -> int:
        return self.config.max_streams

    def speakable(self, raw: str, notes: dict[str, Any]) -> str | None:
        """``raw`` led by its speaker tag, or the stream's last speaker's (kept in ``notes``);
        ``None`` if nothing but tags and punctuation is in it."""
        speaker = notes.get("speaker", "[S1]")
        text = with_speaker(raw, speaker)
        notes["speaker"] = last_speaker(text, speaker)
        return text if has_speech(raw) else None

    def words_of(self, raw: str) -> list[SpokenWord]:
        return speaker_free_words(raw)

    def word_weights(self, words: Sequence[SpokenWord]) -> tuple[list[float], list[float]]:
        return letter_weights(words)

    def start_segment(self, index: int, slot: int, text: str, seed: int | None, greedy: bool = False) -> DiaRequest:
        """Encode ``text``, fill ``slot``'s cross-attention cache and prefill its rows (BOS and the
        prompt's frames, delayed); the request's first row is chosen."""
        ids = self.text_ids(text)
        encoder_in = torch.stack([ids, torch.zeros_like(ids)])
        mask = torch.ones(encoder_in.shape, dtype=torch.bool)
        rows = slot_rows(slot)
        self.network.start(self.cache, rows, self.network.encode(encoder_in, mask), mask)
        params = self.config.sampling
        if greedy:
            params = replace(params, temperature=0.0)
        state = DiaDecodeState(self.network.config, params, seed, prompt=self.prompt_codes)
        prefill = torch.stack(state.rows)[None].expand(2, -1, -1)
        logits = self.network.decode(self.cache, rows, prefill)[:, -1].float().cpu()
        state.choose(logits[0], logits[1])
        vocoder = StreamingVocoder(self.frame_decoder, self.config.chunks)
        return DiaRequest(index, slot, state, vocoder)

    def step(self, requests: Sequence[DiaRequest]) -> None:
        """One decoder row for each request, in one batched call; the frames it completes go to
        their vocoders."""
        live = [r for r in requests if r.generating]
        if not live:
            return
        rows = [row for r in live for row in r.rows]
        tokens = torch.stack([r.state.last_row for r in live for _ in range(2)])
        if self.stepper is None:
            logits = self.network.decode(self.cache, rows, tokens[:, None])[:, -1].float().cpu()
        else:
            logits = self.stepper.step(torch.tensor(rows), tokens)
        for i, request in enumerate(live):
            request.state.choose(logits[2 * i], logits[2 * i + 1])
            request.feed_vocoder()

    def release_slot(self, slot: int) -> None:
        """Slot ``slot`` is free again (engine thread; no unit uses it)."""
        self.cache.clear(slot_rows(slot))

    def warm_up(self) -> None:
        """A short request and a DAC window, on the torch thread count the engine's units run at."""
        with unit_threads():
            request = self.start_segment(0, 0, "[S1] Warm up.", seed=0)
            for _ in range(3):
                self.step([request])
            self.release_slot(0)
            self.frame_decoder.decode([(0,) * self.network.config.decoder.channels] * 8, 0)

    def trim_memory(self) -> None:
        """Nothing to give back: the caches are allocated once, at load."""


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise VoiceLoadError(f"{path}: cannot read weights ({exc})") from None


def _model_weights(root: Path, config: DiaConfig) -> dict[str, torch.Tensor]:
    """``model.safetensors`` (transformers layout) or else the one ``.pth`` (nari-labs layout)."""
    if (root / "model.safetensors").exists():
        return _safetensors(root / "model.safetensors")
    originals = sorted(root.glob("*.pth"))
    if len(originals) != 1:
        raise VoiceLoadError(f"{root}: expected model.safetensors or one nari-labs .pth, found {len(originals)} .pth")
    try:
        return read_original(originals[0], config)
    except CheckpointError as exc:
        raise VoiceLoadError(str(exc)) from None


def _fill(module: torch.nn.Module, weights: dict[str, torch.Tensor], where: Path) -> None:
    """Load ``weights`` into ``module`` after checking every tensor is there with its shape."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise VoiceLoadError(f"{where}: missing {len(missing)} tensors, e.g. {missing[0]}")
    wrong = [name for name in expected if tuple(weights[name].shape) != tuple(expected[name].shape)]
    if wrong:
        name = wrong[0]
        raise VoiceLoadError(f"{where}: {name} is {tuple(weights[name].shape)}, expected {tuple(expected[name].shape)}")
    module.load_state_dict({name: weights[name] for name in expected})


def _read_prompt(root: Path, codec: DacCodec) -> tuple[torch.Tensor, str]:
    try:
        audio, rate = read_mono(root / "prompt.wav")
        text = (root / "prompt.txt").read_text().strip()
    except (OSError, RuntimeError) as exc:
        raise VoiceLoadError(f"{root}: a prompt needs prompt.wav and prompt.txt ({exc})") from None
    mono = resample(audio, rate, codec.config.sample_rate)
    codes = codec.encode(torch.from_numpy(mono)[None].to(codec.device))[0].T.contiguous().cpu()
    return codes, text

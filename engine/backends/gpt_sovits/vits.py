"""GPT-SoVITS v2's SoVITS decoder: semantic tokens (25 Hz) to 32 kHz audio.

The decode path (read from RVC-Boss/GPT-SoVITS, written anew here): each
token's codebook vector, repeated to 50 Hz frames, goes through the content
encoder (``enc_p``: a relative-attention encoder, cross-attention to the
target phonemes conditioned on the speaker vector, a second encoder) to a
prior mean and log-scale per frame; ``z = mean + noise * exp(log_scale) *
noise_scale`` goes backwards through the flow and into HiFi-GAN, 640 samples
per frame, 1280 per token.  The speaker vector comes from the reference
recording's linear spectrogram.

Noise is passed in, not drawn inside: :func:`frame_noise` gives the same
noise for a frame wherever it is decoded (by its absolute index), which is
what lets a streamed chunk be re-decoded with context and still match.

Weights are read once into float32; a decoder is immutable afterwards and its
methods may run on several threads at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from streamvox.engine.backends.gpt_sovits import vits_layers as L
from streamvox.engine.backends.gpt_sovits.checkpoint import CheckpointError, load_s2

NOISE_BLOCK = 64
"""Frames per block of :func:`frame_noise`; each block has its own generator."""
VOCODER_BUCKET_TOKENS = 16
"""HiFi-GAN's span in a window that keeps only its later audio is stretched left to a multiple
of this many tokens (or to the whole window), so its lengths are among the window lengths a
voice warms up (the streaming schedule's bucket)."""


@dataclass(frozen=True)
class SoVITSConfig:
    """Sizes of a SoVITS v2 model (defaults: the released v2 configuration)."""

    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    gin_channels: int = 512
    semantic_frame_rate: str = "25hz"
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    style_bins: int = 704
    """Spectrogram bins the v2 reference encoder reads (of ``filter_length // 2 + 1``)."""
    flow_layers: int = field(default=4, repr=False)
    flow_kernel: int = field(default=5, repr=False)
    flows: int = field(default=4, repr=False)

    def __post_init__(self) -> None:
        if self.hidden_channels != 192 or self.gin_channels != 512:
            raise ValueError("SoVITS v2's timbre encoder fixes hidden_channels at 192 and gin_channels at 512")
        if self.semantic_frame_rate not in ("25hz", "50hz"):
            raise ValueError(f"semantic_frame_rate must be '25hz' or '50hz', not {self.semantic_frame_rate!r}")
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', not {self.resblock!r}")

    @property
    def frames_per_token(self) -> int:
        """Latent frames per semantic token (2 at 25 Hz tokens)."""
        return 2 if self.semantic_frame_rate == "25hz" else 1

    @property
    def samples_per_frame(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def samples_per_token(self) -> int:
        """Audio samples per semantic token (1280 for v2)."""
        return self.samples_per_frame * self.frames_per_token

    @property
    def vocoder_reach_tokens(self) -> int:
        """Tokens of HiFi-GAN's receptive field on either side (see :func:`~.vits_layers.hifigan_reach`)."""
        reach = L.hifigan_reach(
            self.upsample_rates,
            self.upsample_kernel_sizes,
            self.resblock,
            self.resblock_kernel_sizes,
            self.resblock_dilation_sizes,
        )
        return -(-reach // self.frames_per_token)

    def vocoder_start(self, tokens: int, keep_from: int) -> int:
        """Where HiFi-GAN starts in a window of ``tokens`` whose audio is wanted from token
        ``keep_from`` on: its receptive field before that, stretched left to a multiple of
        :data:`VOCODER_BUCKET_TOKENS` (0: the whole window)."""
        if keep_from <= 0:
            return 0
        span = tokens - max(0, keep_from - self.vocoder_reach_tokens)
        span = -(-span // VOCODER_BUCKET_TOKENS) * VOCODER_BUCKET_TOKENS
        return max(0, tokens - span)

    @classmethod
    def tiny(cls) -> SoVITSConfig:
        """A seconds-fast model for tests; same rates, so still 1280 samples per token at 32 kHz."""
        return cls(
            filter_channels=64,
            n_layers=2,
            resblock_kernel_sizes=(3, 5),
            resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
            upsample_initial_channel=64,
        )

    @classmethod
    def from_checkpoint(cls, config: Mapping[str, Any]) -> SoVITSConfig:
        """From an s2 checkpoint's ``config`` (its ``model`` and ``data`` sections)."""
        try:
            model, data = config["model"], config["data"]
            version = str(model.get("version", "v2"))
            if version != "v2":
                raise ValueError(f"only SoVITS v2 is supported, this is {version!r}")
            return cls(
                inter_channels=int(model["inter_channels"]),
                hidden_channels=int(model["hidden_channels"]),
                filter_channels=int(model["filter_channels"]),
                n_heads=int(model["n_heads"]),
                n_layers=int(model["n_layers"]),
                kernel_size=int(model["kernel_size"]),
                resblock=str(model["resblock"]),
                resblock_kernel_sizes=tuple(int(k) for k in model["resblock_kernel_sizes"]),
                resblock_dilation_sizes=tuple(tuple(int(d) for d in ds) for ds in model["resblock_dilation_sizes"]),
                upsample_rates=tuple(int(r) for r in model["upsample_rates"]),
                upsample_initial_channel=int(model["upsample_initial_channel"]),
                upsample_kernel_sizes=tuple(int(k) for k in model["upsample_kernel_sizes"]),
                gin_channels=int(model["gin_channels"]),
                semantic_frame_rate=str(model.get("semantic_frame_rate", "25hz")),
                sampling_rate=int(data["sampling_rate"]),
                filter_length=int(data["filter_length"]),
                hop_length=int(data["hop_length"]),
                win_length=int(data["win_length"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a GPT-SoVITS s2 config: {exc!r}") from None


def warm_up_lengths(window_sizes: Sequence[int]) -> list[int]:
    """The window lengths (tokens) to decode once so a stream meets no convolution shape for
    the first time: its recurring window sizes, and every length HiFi-GAN's span can take in
    them (multiples of :data:`VOCODER_BUCKET_TOKENS` up to the longest), whatever bucket the
    voice's schedule uses."""
    longest = max(window_sizes, default=0)
    spans = range(VOCODER_BUCKET_TOKENS, longest + 1, VOCODER_BUCKET_TOKENS)
    return sorted(set(window_sizes) | set(spans))


def frame_noise(seed: int, start: int, frames: int, channels: int) -> torch.Tensor:
    """Standard normal noise ``(channels, frames)`` for latent frames ``start .. start + frames``.

    Frame ``f``'s noise depends only on ``seed`` and ``f`` (blocks of :data:`NOISE_BLOCK`
    frames, each from its own generator seeded with ``(seed, block)``), so a frame
    decoded twice, in two overlapping windows, gets the same noise both times.
    """
    if frames <= 0:
        return torch.zeros(channels, 0)
    first, last = start // NOISE_BLOCK, (start + frames - 1) // NOISE_BLOCK
    blocks = [
        np.random.default_rng([seed, block]).standard_normal((channels, NOISE_BLOCK), dtype=np.float32)
        for block in range(first, last + 1)
    ]
    joined = np.concatenate(blocks, axis=1)
    offset = start - first * NOISE_BLOCK
    return torch.from_numpy(joined[:, offset : offset + frames].copy())


class SoVITSDecoder:
    """See the module docstring.  ``weights`` is the s2 state dict (any float dtype)."""

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        config: SoVITSConfig,
        bf16_vocoder: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        """``bf16_vocoder`` runs HiFi-GAN (about 90 % of the decode) in bfloat16: about twice as
        fast on CPUs with AMX or AVX512-BF16, at about 44 dB SNR against fp32 (measured on
        random v2-size weights); the parity tests use fp32.  ``device`` holds the weights and
        runs every decode; audio comes back on the CPU."""
        if any(name.startswith("sv_emb") for name in weights):
            raise ValueError("this is a v2Pro SoVITS model (it has sv_emb); only v2 is supported")
        self.config = config
        self.device = torch.device(device)
        self.weights = {k: v.to(self.device) for k, v in L.fold_weight_norm(weights).items()}
        missing = [
            n
            for n in ("quantizer.vq.layers.0._codebook.embed", "enc_p.proj.weight", "dec.conv_pre.weight")
            if n not in self.weights
        ]
        if missing:
            raise ValueError(f"SoVITS weights lack {missing}")
        self.codebook = self.weights["quantizer.vq.layers.0._codebook.embed"]
        self.bf16_vocoder = bf16_vocoder
        self.vocoder_weights = L.lift_convolutions(
            self.weights, "dec.", torch.bfloat16 if bf16_vocoder else torch.float32
        )
        """HiFi-GAN's weights as :func:`~.vits_layers.hifigan` reads them (its only copy)."""
        self.weights = {k: v for k, v in self.weights.items() if not k.startswith("dec.")}

    @classmethod
    def load(cls, path: str | Path, bf16_vocoder: bool = False, device: str | torch.device = "cpu") -> SoVITSDecoder:
        """From an s2 ``.pth`` file (restricted unpickler; header tag restored)."""
        checkpoint = load_s2(path)
        try:
            return cls(checkpoint.weights, SoVITSConfig.from_checkpoint(checkpoint.config), bf16_vocoder, device)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None

    def reference_spectrogram(self, audio: np.ndarray) -> torch.Tensor:
        """Linear spectrogram ``(1, bins, frames)`` of a mono reference at the model's rate;
        peaks above 1 are scaled down as upstream does (by at most 2)."""
        wave = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(1, -1).to(self.device)
        peak = float(wave.abs().max()) if wave.numel() else 0.0
        if peak > 1.0:
            wave = wave / min(2.0, peak)
        c = self.config
        if wave.shape[1] <= (c.filter_length - c.hop_length) // 2:
            raise ValueError("the reference audio is too short")
        return L.linear_spectrogram(wave, c.filter_length, c.hop_length, c.win_length)

    @torch.inference_mode()
    def speaker(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """The speaker/style vector ``(1, gin_channels, 1)`` from a reference spectrogram."""
        return L.style_encoder(self.weights, "ref_enc", spectrogram[:, : self.config.style_bins])

    @torch.inference_mode()
    def encode_text(self, phonemes: torch.Tensor) -> torch.Tensor:
        """The target text's side of the prior encoder for phoneme ids ``(batch, phonemes)``:
        its transformer, then the timbre block's text projection, ``(batch, 512, phonemes)``.
        It depends on the text alone, so a stream computes it once per utterance instead of
        once per decode window (about 6 ms a window at v2 size)."""
        c, w = self.config, self.weights
        text = F.embedding(phonemes.to(self.device), w["enc_p.text_embedding.weight"]).transpose(1, 2)
        text = L.transformer_encoder(w, "enc_p.encoder_text", text, c.n_layers, c.n_heads, c.kernel_size)
        return L.conv1d(w, "enc_p.mrte.text_pre", text)

    @torch.inference_mode()
    def encode(
        self, codes: torch.Tensor, text: torch.Tensor, speaker: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior mean and log-scale ``(batch, inter_channels, frames)`` for tokens ``(batch, tokens)``
        and the target text encoded by :meth:`encode_text`.  Attention is global: every frame
        depends on every token given."""
        c, w = self.config, self.weights
        quantized = F.embedding(codes, self.codebook).transpose(1, 2)
        y = quantized.repeat_interleave(c.frames_per_token, dim=2)
        y = L.conv1d(w, "enc_p.ssl_proj", y)
        y = L.transformer_encoder(w, "enc_p.encoder_ssl", y, c.n_layers // 2, c.n_heads, c.kernel_size)
        content = L.conv1d(w, "enc_p.mrte.c_pre", y)
        mixed = L.attention(w, "enc_p.mrte.cross_attention", content, text, heads=4, window=None)
        y = L.conv1d(w, "enc_p.mrte.c_post", mixed + content + speaker)
        y = L.transformer_encoder(w, "enc_p.encoder2", y, c.n_layers // 2, c.n_heads, c.kernel_size)
        stats = L.conv1d(w, "enc_p.proj", y)
        return stats[:, : c.inter_channels], stats[:, c.inter_channels :]

    @torch.inference_mode()
    def synthesize(
        self,
        mean: torch.Tensor,
        log_scale: torch.Tensor,
        noise: torch.Tensor,
        speaker: torch.Tensor,
        noise_scale: float,
        vocode_from: int = 0,
    ) -> torch.Tensor:
        """Audio ``(batch, (frames - vocode_from) * samples_per_frame)`` from prior statistics and
        noise of the same shape: the flow runs over every frame, HiFi-GAN from frame ``vocode_from``
        on (the frames before it are only context for the flow)."""
        c = self.config
        z = mean + noise * torch.exp(log_scale) * noise_scale
        z = L.flow_reverse(self.weights, "flow", z, speaker, c.flows, c.flow_layers, c.flow_kernel)
        z = z[:, :, vocode_from:]
        dtype = torch.bfloat16 if self.bf16_vocoder else torch.float32
        audio = L.hifigan(
            self.vocoder_weights,
            "dec",
            z.to(dtype),
            speaker.to(dtype),
            c.upsample_rates,
            c.upsample_kernel_sizes,
            c.resblock,
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
        )
        return audio[:, 0].to(torch.float32)

    @torch.inference_mode()
    def semantic_tokens(self, features: torch.Tensor) -> list[int]:
        """Quantise HuBERT features ``(1, 768, frames at 50 Hz)`` to semantic tokens (25 Hz for v2):
        ``ssl_proj``, then the nearest codebook vector of each frame."""
        w = self.weights
        if "ssl_proj.weight" not in w:
            raise ValueError("this SoVITS checkpoint has no ssl_proj: it cannot turn audio into tokens")
        stride = self.config.frames_per_token
        x = F.conv1d(
            features.to(device=self.device, dtype=torch.float32),
            w["ssl_proj.weight"],
            w.get("ssl_proj.bias"),
            stride=stride,
        )[0].T
        distance = x.pow(2).sum(1, keepdim=True) - 2 * x @ self.codebook.T + self.codebook.pow(2).sum(1)[None]
        return distance.argmin(dim=1).tolist()

    def decode(
        self,
        codes: Sequence[int] | torch.Tensor,
        phonemes: Sequence[int] | torch.Tensor,
        speaker: torch.Tensor,
        noise_scale: float = 0.5,
        seed: int = 0,
        first_token: int = 0,
        keep_from: int = 0,
    ) -> torch.Tensor:
        """Decode ``codes`` for the target ``phonemes``: the audio of ``codes[keep_from:]``,
        ``(len(codes) - keep_from) * samples_per_token`` samples on the CPU.

        ``first_token`` is where ``codes`` start in their utterance (0 for a one-shot decode); it
        places the window's noise, so a streamed window gets the noise the one-shot decode gives
        the same frames.  The tokens before ``keep_from`` are context: they go through the
        content encoder and the flow, and HiFi-GAN runs only from :meth:`SoVITSConfig.vocoder_start`
        (about 90 % of a decode's time is HiFi-GAN's); the audio kept is what decoding all of
        ``codes`` gives it, to float rounding."""
        text = self.encode_text(torch.as_tensor(phonemes, dtype=torch.long).reshape(1, -1))
        return self.decode_encoded(codes, text, speaker, noise_scale, seed, first_token, keep_from)

    def decode_encoded(
        self,
        codes: Sequence[int] | torch.Tensor,
        text: torch.Tensor,
        speaker: torch.Tensor,
        noise_scale: float = 0.5,
        seed: int = 0,
        first_token: int = 0,
        keep_from: int = 0,
    ) -> torch.Tensor:
        """:meth:`decode` with the target text already through :meth:`encode_text`."""
        c = self.config
        codes_t = torch.as_tensor(codes, dtype=torch.long).reshape(1, -1).to(self.device)
        if not 0 <= keep_from <= codes_t.shape[1]:
            raise ValueError(f"keep_from must be within the {codes_t.shape[1]} tokens, got {keep_from}")
        mean, log_scale = self.encode(codes_t, text, speaker)
        noise = frame_noise(seed, first_token * c.frames_per_token, mean.shape[2], mean.shape[1])
        vocode_from = c.vocoder_start(codes_t.shape[1], keep_from)
        audio = self.synthesize(
            mean, log_scale, noise.unsqueeze(0).to(self.device), speaker, noise_scale, vocode_from * c.frames_per_token
        )
        return audio[0, (keep_from - vocode_from) * c.samples_per_token :].cpu()


@dataclass(frozen=True)
class UtteranceDecoder:
    """SoVITS bound to one utterance (its phonemes, speaker and noise): the streaming token
    vocoder's :class:`~streamvox.engine.ar.token_vocoder.TokenDecoder`.  Immutable, so
    windows of different streams decode side by side.  The text is encoded once, here, and
    every window reuses it."""

    sovits: SoVITSDecoder
    phonemes: torch.Tensor
    speaker: torch.Tensor
    noise_scale: float
    seed: int
    text: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.sovits.encode_text(self.phonemes.reshape(1, -1)))

    @property
    def samples_per_token(self) -> int:
        return self.sovits.config.samples_per_token

    def decode(self, tokens: Sequence[int], first_token: int, keep_from: int = 0) -> np.ndarray:
        audio = self.sovits.decode_encoded(
            tokens, self.text, self.speaker, self.noise_scale, self.seed, first_token, keep_from
        )
        return audio.numpy()

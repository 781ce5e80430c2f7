"""The Descript Audio Codec (DAC) Dia speaks through: codes -> 44.1 kHz audio, and audio -> codes.

The network (read from transformers' ``models/dac``, written anew here): a
residual vector quantizer of ``n_codebooks`` factorised codebooks (an 8-d code
projected back up by a 1x1 convolution, summed over codebooks); a decoder of a
7-tap convolution, upsampling blocks (Snake, transposed convolution, three
residual units dilated 1, 3 and 9) and a final Snake, 7-tap convolution and
tanh; an encoder that mirrors it for audio prompts.  Snake is
``x + sin²(αx) / α``.

Parameter names follow the transformers ``DacModel`` layout; weight-normalised
checkpoints (``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``)
are folded into plain weights when loaded.  The decoder is not causal: each
output frame depends on about 10 frames either side, so a stream decodes
windows with that much context and keeps only their middle (``DacWindows``
in ``stream.py``).  Thread-safe for concurrent calls (no state besides weights).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DacConfig:
    """Sizes of a DAC model (defaults: the 44.1 kHz model Dia uses)."""

    encoder_hidden: int = 64
    downsampling: tuple[int, ...] = (2, 4, 8, 8)
    decoder_hidden: int = 1536
    codebooks: int = 9
    codebook_size: int = 1024
    codebook_dim: int = 8
    sample_rate: int = 44100

    @property
    def latent(self) -> int:
        return self.encoder_hidden * 2 ** len(self.downsampling)

    @property
    def hop(self) -> int:
        return math.prod(self.downsampling)

    @classmethod
    def tiny(cls) -> DacConfig:
        """Real hop (512), rate and codebooks, narrow layers (tests, benches)."""
        return cls(encoder_hidden=4, decoder_hidden=64)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DacConfig:
        try:
            return cls(
                encoder_hidden=int(raw["encoder_hidden_size"]),
                downsampling=tuple(int(r) for r in raw["downsampling_ratios"]),
                decoder_hidden=int(raw["decoder_hidden_size"]),
                codebooks=int(raw["n_codebooks"]),
                codebook_size=int(raw["codebook_size"]),
                codebook_dim=int(raw["codebook_dim"]),
                sample_rate=int(raw["sampling_rate"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a DAC config ({type(exc).__name__}: {exc})") from None


class Snake(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.snake1 = Snake(channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake(channels)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


class DecoderBlock(nn.Module):
    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.snake1 = Snake(channels_in)
        self.conv_t1 = nn.ConvTranspose1d(
            channels_in, channels_out, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2)
        )
        self.res_unit1 = ResidualUnit(channels_out, 1)
        self.res_unit2 = ResidualUnit(channels_out, 3)
        self.res_unit3 = ResidualUnit(channels_out, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_unit3(self.res_unit2(self.res_unit1(self.conv_t1(self.snake1(x)))))


class EncoderBlock(nn.Module):
    def __init__(self, channels_out: int, stride: int) -> None:
        super().__init__()
        half = channels_out // 2
        self.res_unit1 = ResidualUnit(half, 1)
        self.res_unit2 = ResidualUnit(half, 3)
        self.res_unit3 = ResidualUnit(half, 9)
        self.snake1 = Snake(half)
        self.conv1 = nn.Conv1d(half, channels_out, kernel_size=2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.snake1(self.res_unit3(self.res_unit2(self.res_unit1(x)))))


class Decoder(nn.Module):
    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        width = config.decoder_hidden
        self.conv1 = nn.Conv1d(config.latent, width, kernel_size=7, padding=3)
        strides = config.downsampling[::-1]
        self.block = nn.ModuleList(
            DecoderBlock(width // 2**i, width // 2 ** (i + 1), stride) for i, stride in enumerate(strides)
        )
        out = width // 2 ** len(strides)
        self.snake1 = Snake(out)
        self.conv2 = nn.Conv1d(out, 1, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return torch.tanh(self.conv2(self.snake1(x)))


class Encoder(nn.Module):
    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, config.encoder_hidden, kernel_size=7, padding=3)
        self.block = nn.ModuleList(
            EncoderBlock(config.encoder_hidden * 2**i, stride) for i, stride in enumerate(config.downsampling, 1)
        )
        self.snake1 = Snake(config.latent)
        self.conv2 = nn.Conv1d(config.latent, config.latent, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class Quantizer(nn.Module):
    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.in_proj = nn.Conv1d(config.latent, config.codebook_dim, kernel_size=1)
        self.out_proj = nn.Conv1d(config.codebook_dim, config.latent, kernel_size=1)
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)

    def nearest(self, latents: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, T)`` of the codebook entries nearest (in cosine) to ``latents`` ``(B, dim, T)``."""
        batch, dim, steps = latents.shape
        flat = F.normalize(latents.permute(0, 2, 1).reshape(batch * steps, dim))
        book = F.normalize(self.codebook.weight)
        score = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ book.t()) + book.pow(2).sum(1, keepdim=True).t()
        return score.max(1)[1].reshape(batch, steps)


class ResidualQuantizer(nn.Module):
    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.quantizers = nn.ModuleList(Quantizer(config) for _ in range(config.codebooks))


class DacCodec(nn.Module):
    """``decode(codes)`` and ``encode(audio)``; the unit of time is one frame of ``hop`` samples."""

    def __init__(self, config: DacConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = ResidualQuantizer(config)

    @property
    def device(self) -> torch.device:
        """Where its weights are (``.to(device)`` moves them); inputs must be there too."""
        return self.decoder.parameters().__next__().device

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, codebooks, frames)`` -> audio ``(B, frames·hop)`` in [-1, 1]."""
        latent = sum(
            q.out_proj(q.codebook(codes[:, i]).transpose(1, 2))  # type: ignore[attr-defined]
            for i, q in enumerate(self.quantizer.quantizers)
        )
        return self.decoder(latent).squeeze(1)

    @torch.inference_mode()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio ``(B, samples)`` at the codec's rate -> codes ``(B, codebooks, ceil(samples / hop))``
        (the audio is zero-padded to whole frames first)."""
        hop = self.config.hop
        audio = F.pad(audio, (0, -audio.shape[-1] % hop))
        residual = self.encoder(audio[:, None, :])
        codes = []
        for q in self.quantizer.quantizers:
            index = q.nearest(q.in_proj(residual))  # type: ignore[operator]
            codes.append(index)
            residual = residual - q.out_proj(q.codebook(index).transpose(1, 2))  # type: ignore[operator]
        return torch.stack(codes, dim=1)


def fold_weight_norm(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain ``weight`` tensors from weight-normalised pairs (norm over every dim but the first)."""
    folded: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in weights.items():
        for suffix, part in (
            (".parametrizations.weight.original0", "g"),
            (".parametrizations.weight.original1", "v"),
            (".weight_g", "g"),
            (".weight_v", "v"),
        ):
            if name.endswith(suffix):
                pairs.setdefault(name[: -len(suffix)], {})[part] = value
                break
        else:
            folded[name] = value
    for stem, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise ValueError(f"{stem}: weight norm needs both magnitude and direction")
        v = pair["v"]
        norm = v.norm(dim=tuple(range(1, v.dim())), keepdim=True)
        folded[f"{stem}.weight"] = pair["g"] * v / norm
    return folded

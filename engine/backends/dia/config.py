"""Sizes and special ids of a Dia model, read from a voice directory's ``config.json``.

Dia (nari-labs, Apache-2.0) is a byte-level text encoder and a decoder that
predicts nine DAC codebooks per step, each channel delayed by its own number
of steps.  The ``config.json`` read here is the transformers layout
(``encoder_config`` / ``decoder_config`` / ``delay_pattern``), the one a
``DiaForConditionalGeneration`` checkpoint is saved with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DELAY_PATTERN = (0, 8, 9, 10, 11, 12, 13, 14, 15)


@dataclass(frozen=True)
class EncoderConfig:
    """The text encoder: bidirectional, RoPE, SwiGLU, RMSNorm (Dia-1.6B defaults)."""

    layers: int = 12
    hidden: int = 1024
    heads: int = 16
    kv_heads: int = 16
    head_dim: int = 128
    ffn: int = 4096
    vocab: int = 256
    max_positions: int = 1024
    rope_theta: float = 10_000.0


@dataclass(frozen=True)
class DecoderConfig:
    """The audio decoder: causal GQA self-attention, cross-attention over the encoder, SwiGLU."""

    layers: int = 18
    hidden: int = 2048
    heads: int = 16
    kv_heads: int = 4
    head_dim: int = 128
    cross_heads: int = 16
    cross_kv_heads: int = 16
    cross_head_dim: int = 128
    ffn: int = 8192
    vocab: int = 1028
    channels: int = 9
    max_positions: int = 3072
    rope_theta: float = 10_000.0


@dataclass(frozen=True)
class DiaConfig:
    """A whole Dia model: encoder, decoder, the delay pattern and the audio token ids."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    delay_pattern: tuple[int, ...] = DELAY_PATTERN
    norm_eps: float = 1e-5
    eos: int = 1024
    pad: int = 1025
    bos: int = 1026

    def __post_init__(self) -> None:
        if len(self.delay_pattern) != self.decoder.channels:
            raise ValueError(f"{self.decoder.channels} channels need as many delays, got {list(self.delay_pattern)}")
        if self.delay_pattern[0] != 0 or any(d < 0 for d in self.delay_pattern):
            raise ValueError(f"channel 0 must be undelayed and delays >= 0, got {list(self.delay_pattern)}")
        if not self.eos < self.pad < self.decoder.vocab or not self.eos < self.bos < self.decoder.vocab:
            raise ValueError("EOS must come before PAD and BOS, all inside the decoder's vocabulary")
        for name, part in (("encoder", self.encoder), ("decoder", self.decoder)):
            if part.heads % part.kv_heads:
                raise ValueError(f"{name}: heads ({part.heads}) must be a multiple of kv_heads ({part.kv_heads})")
        if self.decoder.cross_heads % self.decoder.cross_kv_heads:
            raise ValueError("decoder: cross_heads must be a multiple of cross_kv_heads")

    @property
    def max_delay(self) -> int:
        return max(self.delay_pattern)

    @classmethod
    def tiny(cls, delay_pattern: tuple[int, ...] = DELAY_PATTERN) -> DiaConfig:
        """A seconds-fast model with the real ids, vocabularies and delay pattern (tests, benches)."""
        return cls(
            encoder=EncoderConfig(layers=2, hidden=32, heads=4, kv_heads=4, head_dim=8, ffn=64),
            decoder=DecoderConfig(
                layers=2,
                hidden=48,
                heads=4,
                kv_heads=2,
                head_dim=12,
                cross_heads=4,
                cross_kv_heads=2,
                cross_head_dim=8,
                ffn=96,
                channels=len(delay_pattern),
                max_positions=512,
            ),
            delay_pattern=delay_pattern,
        )

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> DiaConfig:
        """From a transformers ``DiaConfig`` saved as JSON (``ValueError`` names what is wrong)."""
        try:
            enc, dec = raw["encoder_config"], raw["decoder_config"]
            encoder = EncoderConfig(
                layers=int(enc["num_hidden_layers"]),
                hidden=int(enc["hidden_size"]),
                heads=int(enc["num_attention_heads"]),
                kv_heads=int(enc.get("num_key_value_heads") or enc["num_attention_heads"]),
                head_dim=int(enc.get("head_dim") or enc["hidden_size"] // enc["num_attention_heads"]),
                ffn=int(enc["intermediate_size"]),
                vocab=int(enc["vocab_size"]),
                max_positions=int(enc.get("max_position_embeddings", 1024)),
                rope_theta=_rope_theta(enc),
            )
            _check_activation(enc, "encoder")
            _check_activation(dec, "decoder")
            decoder = DecoderConfig(
                layers=int(dec["num_hidden_layers"]),
                hidden=int(dec["hidden_size"]),
                heads=int(dec["num_attention_heads"]),
                kv_heads=int(dec["num_key_value_heads"]),
                head_dim=int(dec.get("head_dim") or dec["hidden_size"] // dec["num_attention_heads"]),
                cross_heads=int(dec["cross_num_attention_heads"]),
                cross_kv_heads=int(dec["cross_num_key_value_heads"]),
                cross_head_dim=int(dec["cross_head_dim"]),
                ffn=int(dec["intermediate_size"]),
                vocab=int(dec["vocab_size"]),
                channels=int(dec["num_channels"]),
                max_positions=int(dec.get("max_position_embeddings", 3072)),
                rope_theta=_rope_theta(dec),
            )
            if int(dec.get("cross_hidden_size", encoder.hidden)) != encoder.hidden:
                raise ValueError("decoder cross_hidden_size must equal the encoder's hidden_size")
            delays = raw.get("delay_pattern") or DELAY_PATTERN
            return cls(
                encoder=encoder,
                decoder=decoder,
                delay_pattern=tuple(int(d) for d in delays),
                norm_eps=float(dec.get("norm_eps", raw.get("norm_eps", 1e-5))),
                eos=int(_first(dec.get("eos_token_id", 1024))),
                pad=int(dec.get("pad_token_id", 1025)),
                bos=int(dec.get("bos_token_id", 1026)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a Dia config ({type(exc).__name__}: {exc})") from None


def _rope_theta(part: Mapping[str, Any]) -> float:
    rope = part.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"only default RoPE is supported, got {rope.get('rope_type')!r}")
    return float(rope.get("rope_theta", part.get("rope_theta", 10_000.0)))


def _check_activation(part: Mapping[str, Any], name: str) -> None:
    if part.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{name}: only the SiLU-gated MLP is supported, got {part.get('hidden_act')!r}")


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value

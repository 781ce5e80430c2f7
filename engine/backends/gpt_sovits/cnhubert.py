"""HuBERT content features (GPT-SoVITS's "cnhubert") for a voice's reference recording.

GPT-SoVITS conditions its T2S model on the reference's semantic tokens: the
reference at 16 kHz, with silence appended, goes through a HuBERT base model
(upstream uses ``chinese-hubert-base``); SoVITS's ``ssl_proj`` halves the
frame rate to 25 Hz and its codebook quantises each frame to a token.

This module runs that HuBERT from the user's local model directory (the
Hugging Face layout: ``config.json`` and ``pytorch_model.bin``, read with the
restricted unpickler).  The network, read from the reference and written
anew: seven strided convolutions (the first with group norm), a projection,
a grouped convolutional position embedding, and a post-LN transformer.  No
input normalisation, as upstream calls the model on the raw waveform.

Immutable after loading; safe to call from several threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from streamvox.engine.backends.gpt_sovits import vits_layers as L
from streamvox.engine.backends.gpt_sovits.checkpoint import CheckpointError, restricted_load

SAMPLE_RATE = 16000
APPENDED_SILENCE = 9600
"""Zeros upstream appends to the 16 kHz reference (0.3 s counted at 32 kHz, so 0.6 s here)."""


@dataclass(frozen=True)
class HubertConfig:
    """The fields of a Hugging Face ``HubertConfig`` that inference reads."""

    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool
    feat_extract_norm: str
    feat_proj_layer_norm: bool
    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    intermediate_size: int
    num_conv_pos_embeddings: int
    num_conv_pos_embedding_groups: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HubertConfig:
        if raw.get("do_stable_layer_norm", False):
            raise ValueError("pre-LN ('stable layer norm') HuBERT models are not supported")
        for key in ("hidden_act", "feat_extract_activation"):
            if raw.get(key, "gelu") != "gelu":
                raise ValueError(f"{key} must be gelu")
        try:
            config = cls(
                conv_dim=tuple(int(x) for x in raw["conv_dim"]),
                conv_kernel=tuple(int(x) for x in raw["conv_kernel"]),
                conv_stride=tuple(int(x) for x in raw["conv_stride"]),
                conv_bias=bool(raw.get("conv_bias", False)),
                feat_extract_norm=str(raw.get("feat_extract_norm", "group")),
                feat_proj_layer_norm=bool(raw.get("feat_proj_layer_norm", True)),
                hidden_size=int(raw["hidden_size"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                intermediate_size=int(raw["intermediate_size"]),
                num_conv_pos_embeddings=int(raw["num_conv_pos_embeddings"]),
                num_conv_pos_embedding_groups=int(raw["num_conv_pos_embedding_groups"]),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a HuBERT config: {exc!r}") from None
        if config.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"feat_extract_norm must be 'group' or 'layer', not {config.feat_extract_norm!r}")
        return config


class CNHubert:
    """See the module docstring."""

    def __init__(self, weights: dict[str, torch.Tensor], config: HubertConfig) -> None:
        self.config = config
        self.w = L.fold_weight_norm({k.removeprefix("hubert."): v for k, v in weights.items()})
        if "encoder.pos_conv_embed.conv.weight" not in self.w or "feature_projection.projection.weight" not in self.w:
            raise ValueError("these weights are not a HuBERT model")

    @classmethod
    def load(cls, directory: str | Path) -> CNHubert:
        root = Path(directory)
        try:
            config = HubertConfig.from_json(json.loads((root / "config.json").read_text(encoding="utf-8")))
            data = (root / "pytorch_model.bin").read_bytes()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{root}: not a HuBERT model directory ({exc})") from None
        state = restricted_load(data, root / "pytorch_model.bin")
        if not isinstance(state, dict):
            raise CheckpointError(f"{root}/pytorch_model.bin: not a state dict")
        try:
            return cls(state, config)
        except ValueError as exc:
            raise CheckpointError(f"{root}: {exc}") from None

    @torch.inference_mode()
    def features(self, audio_16k: np.ndarray) -> torch.Tensor:
        """Last hidden states ``(1, hidden, frames)`` (50 per second) of a mono 16 kHz waveform."""
        c, w = self.config, self.w
        x = torch.as_tensor(np.asarray(audio_16k, dtype=np.float32)).reshape(1, 1, -1)
        for i, stride in enumerate(c.conv_stride):
            name = f"feature_extractor.conv_layers.{i}"
            x = F.conv1d(x, w[name + ".conv.weight"], w.get(name + ".conv.bias"), stride=stride)
            if c.feat_extract_norm == "group" and i == 0:
                x = F.group_norm(x, x.shape[1], w[name + ".layer_norm.weight"], w[name + ".layer_norm.bias"])
            elif c.feat_extract_norm == "layer":
                x = F.layer_norm(
                    x.transpose(1, 2), (x.shape[1],), w[name + ".layer_norm.weight"], w[name + ".layer_norm.bias"]
                ).transpose(1, 2)
            x = F.gelu(x)
        h = x.transpose(1, 2)
        if c.feat_proj_layer_norm:
            h = F.layer_norm(
                h,
                (h.shape[-1],),
                w["feature_projection.layer_norm.weight"],
                w["feature_projection.layer_norm.bias"],
                c.layer_norm_eps,
            )
        h = L.linear(w, "feature_projection.projection", h)
        pos = F.conv1d(
            h.transpose(1, 2),
            w["encoder.pos_conv_embed.conv.weight"],
            w["encoder.pos_conv_embed.conv.bias"],
            padding=c.num_conv_pos_embeddings // 2,
            groups=c.num_conv_pos_embedding_groups,
        )
        if c.num_conv_pos_embeddings % 2 == 0:
            pos = pos[:, :, :-1]
        h = h + F.gelu(pos).transpose(1, 2)
        h = self._norm("encoder.layer_norm", h)
        for i in range(c.num_hidden_layers):
            h = self._layer(f"encoder.layers.{i}", h)
        return h.transpose(1, 2)

    def _norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(
            x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], self.config.layer_norm_eps
        )

    def _layer(self, name: str, h: torch.Tensor) -> torch.Tensor:
        batch, frames, dim = h.shape
        heads = self.config.num_attention_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, frames, heads, dim // heads).transpose(1, 2)

        q, k, v = (split(L.linear(self.w, f"{name}.attention.{p}_proj", h)) for p in "qkv")
        scores = (q @ k.transpose(2, 3)) * (dim // heads) ** -0.5
        attn = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, frames, dim)
        h = self._norm(f"{name}.layer_norm", h + L.linear(self.w, f"{name}.attention.out_proj", attn))
        ff = L.linear(
            self.w,
            f"{name}.feed_forward.output_dense",
            F.gelu(L.linear(self.w, f"{name}.feed_forward.intermediate_dense", h)),
        )
        return self._norm(f"{name}.final_layer_norm", h + ff)


def reference_tokens(hubert: CNHubert, encode: Callable[[torch.Tensor], list[int]], audio_16k: np.ndarray) -> list[int]:
    """A reference recording's semantic tokens: HuBERT features of it with upstream's trailing
    silence, through ``encode`` (:meth:`SoVITSDecoder.semantic_tokens`)."""
    seconds = len(audio_16k) / SAMPLE_RATE
    if not 3.0 <= seconds <= 10.0:
        raise ValueError(f"the reference audio must last 3 to 10 s (GPT-SoVITS's range), not {seconds:.1f} s")
    padded = np.concatenate([np.asarray(audio_16k, dtype=np.float32), np.zeros(APPENDED_SILENCE, np.float32)])
    return list(encode(hubert.features(padded)))

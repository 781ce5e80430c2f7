"""Tiny SoVITS and HuBERT configurations and a synthetic reference recording, shared by the
SoVITS parity, token-vocoder and serving tests."""

from __future__ import annotations

import numpy as np
from streamvox.bench.random_voice import sovits_hps
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig

TINY_HPS = sovits_hps(SoVITSConfig.tiny())
"""The s2 ``config`` of the tiny test voice, as the reference's ``make_s2`` builds it."""


def reference_audio(seconds: float = 1.2, rate: int = 32000) -> np.ndarray:
    """A voiced-sounding test reference: a few harmonics with vibrato and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 140 + 10 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.3
    return (wave + 0.01 * np.random.default_rng(0).standard_normal(t.size)).astype(np.float32)


TINY_HUBERT = {
    "conv_dim": [32] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_proj_layer_norm": True,
    "feat_extract_activation": "gelu",
    "hidden_act": "gelu",
    "hidden_size": 768,
    "num_attention_heads": 12,
    "num_hidden_layers": 2,
    "intermediate_size": 256,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "num_feat_extract_layers": 7,
    "layer_norm_eps": 1e-5,
    "mask_time_prob": 0.05,
    "mask_feature_prob": 0.0,
    "feat_proj_dropout": 0.0,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "do_stable_layer_norm": False,
}

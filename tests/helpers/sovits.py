"""Tiny SoVITS and HuBERT configurations and a synthetic reference recording, shared by the
SoVITS parity, token-vocoder and serving tests."""

from __future__ import annotations

import numpy as np

TINY_HPS = {
    "train": {"segment_size": 20480},
    "data": {
        "sampling_rate": 32000,
        "filter_length": 2048,
        "hop_length": 640,
        "win_length": 2048,
        "n_speakers": 300,
    },
    "model": {
        "inter_channels": 192,
        "hidden_channels": 192,
        "filter_channels": 64,
        "n_heads": 2,
        "n_layers": 2,
        "kernel_size": 3,
        "p_dropout": 0.1,
        "resblock": "1",
        "resblock_kernel_sizes": [3, 5],
        "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
        "upsample_rates": [10, 8, 2, 2, 2],
        "upsample_initial_channel": 64,
        "upsample_kernel_sizes": [16, 16, 8, 2, 2],
        "n_layers_q": 3,
        "use_spectral_norm": False,
        "gin_channels": 512,
        "semantic_frame_rate": "25hz",
        "freeze_quantizer": True,
        "version": "v2",
    },
}


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

"""Random-weight Dia voices in the real file layout, for benchmarks and tests.

No real weights can be downloaded here, so Dia is measured, and served in
tests, on random weights of the right shapes, written as transformers writes a
``DiaForConditionalGeneration`` and a ``DacModel`` (``config.json``,
``generation_config.json`` and ``model.safetensors``; the DAC in ``dac/``), so
transformers loads and generates from the same directory.  They speak noise, not words.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacCodec, DacConfig
from streamvox.engine.backends.dia.model import DiaNetwork


def transformers_config(config: DiaConfig) -> dict[str, object]:
    """``config`` as transformers' ``DiaConfig.to_dict()`` writes it."""
    enc, dec = config.encoder, config.decoder
    rope = {"rope_type": "default"}
    return {
        "architectures": ["DiaForConditionalGeneration"],
        "model_type": "dia",
        "is_encoder_decoder": True,
        "norm_eps": config.norm_eps,
        "delay_pattern": list(config.delay_pattern),
        "encoder_config": {
            "model_type": "dia_encoder",
            "num_hidden_layers": enc.layers,
            "hidden_size": enc.hidden,
            "num_attention_heads": enc.heads,
            "num_key_value_heads": enc.kv_heads,
            "head_dim": enc.head_dim,
            "intermediate_size": enc.ffn,
            "vocab_size": enc.vocab,
            "max_position_embeddings": enc.max_positions,
            "norm_eps": config.norm_eps,
            "hidden_act": "silu",
            "rope_parameters": {**rope, "rope_theta": enc.rope_theta},
        },
        "decoder_config": {
            "model_type": "dia_decoder",
            "num_hidden_layers": dec.layers,
            "hidden_size": dec.hidden,
            "num_attention_heads": dec.heads,
            "num_key_value_heads": dec.kv_heads,
            "head_dim": dec.head_dim,
            "cross_num_attention_heads": dec.cross_heads,
            "cross_num_key_value_heads": dec.cross_kv_heads,
            "cross_head_dim": dec.cross_head_dim,
            "cross_hidden_size": enc.hidden,
            "intermediate_size": dec.ffn,
            "vocab_size": dec.vocab,
            "num_channels": dec.channels,
            "max_position_embeddings": dec.max_positions,
            "norm_eps": config.norm_eps,
            "hidden_act": "silu",
            "rope_parameters": {**rope, "rope_theta": dec.rope_theta},
            "eos_token_id": config.eos,
            "pad_token_id": config.pad,
            "bos_token_id": config.bos,
        },
    }


def dac_transformers_config(config: DacConfig) -> dict[str, object]:
    return {
        "architectures": ["DacModel"],
        "model_type": "dac",
        "encoder_hidden_size": config.encoder_hidden,
        "downsampling_ratios": list(config.downsampling),
        "decoder_hidden_size": config.decoder_hidden,
        "n_codebooks": config.codebooks,
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim,
        "sampling_rate": config.sample_rate,
    }


def random_dia(config: DiaConfig, seed: int, std: float = 0.02, eos_scale: float = 1.0) -> DiaNetwork:
    """A network with normal(0, ``std``) weights and unit norms; ``eos_scale`` multiplies the head row
    of channel 0's EOS (large: generation ends after a few rows)."""
    torch.manual_seed(seed)
    network = DiaNetwork(config)
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            if name.endswith("norm.weight"):
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, std)
        network.logits_dense.weight[config.eos] *= eos_scale
    return network.eval()


def random_dac(config: DacConfig, seed: int) -> DacCodec:
    """A codec whose convolutions keep about 0.7 of their input's size: noise at about 0.2 RMS,
    neither silence nor a tanh pinned at ±1 (where float rounding is amplified without bound)."""
    torch.manual_seed(seed)
    codec = DacCodec(config)
    with torch.no_grad():
        for name, parameter in codec.named_parameters():
            if name.endswith("alpha"):
                parameter.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                parameter.zero_()
            elif parameter.dim() == 3:
                fan_in = parameter.shape[1] * parameter.shape[2]
                parameter.normal_(0.0, 0.7 / fan_in**0.5)
            else:
                parameter.normal_(0.0, 1.0)
    return codec.eval()


def write_dia_voice(
    directory: Path,
    config: DiaConfig,
    dac: DacConfig,
    seed: int = 0,
    std: float = 0.02,
    eos_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    voice: dict[str, object] | None = None,
) -> Path:
    """A voice directory ``DiaVoice.load`` and transformers both read; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dac").mkdir(exist_ok=True)
    network = random_dia(config, seed, std, eos_scale)
    weights = {k: v.to(dtype).contiguous() for k, v in network.state_dict().items()}
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(transformers_config(config), indent=2))
    generation = {"bos_token_id": config.bos, "eos_token_id": config.eos, "pad_token_id": config.pad}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2))
    codec = random_dac(dac, seed + 1)
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(directory / "dac" / "model.safetensors"))
    (directory / "dac" / "config.json").write_text(json.dumps(dac_transformers_config(dac), indent=2))
    if voice is not None:
        (directory / "voice.json").write_text(json.dumps(voice, indent=2))
    return directory


def describe(config: DiaConfig) -> dict[str, object]:
    """The sizes, for a benchmark's JSON."""
    return asdict(config)

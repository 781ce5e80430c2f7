"""Random-weight GPT-SoVITS v2 voices in the real file formats, for benchmarks and tests.

No real weights can be downloaded here, so speed is measured, and the server
tested, on random weights of the right shapes written exactly as GPT-SoVITS
writes its checkpoints (s1 ``.ckpt``, s2 ``.pth`` with its version-tagged
header) plus a voice directory around them: ``voice.json``, a reference
recording and its precomputed semantic tokens.  They speak noise, not words.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig


def write_t2s_checkpoint(path: Path, cfg: T2SConfig, seed: int, eos_scale: float = 0.0) -> None:
    """Random T2S weights (scaled like a trained model's) as a real s1 ``.ckpt``.

    The end-of-speech row of the output head is the random row times ``eos_scale``: 0 (the
    default) keeps that logit at 0, far below the top 15, so generation runs to its cap; a
    large scale makes end of speech the most likely token on about half of the steps."""
    gen = torch.Generator().manual_seed(seed)
    h = cfg.hidden

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.02

    head = rand(cfg.vocab, h)
    head[cfg.eos] *= eos_scale
    weights = {
        "bert_proj.weight": rand(h, 1024),
        "bert_proj.bias": torch.zeros(h),
        "ar_text_embedding.word_embeddings.weight": rand(cfg.phoneme_vocab, h),
        "ar_text_position.alpha": torch.ones(1),
        "ar_audio_embedding.word_embeddings.weight": rand(cfg.vocab, h),
        "ar_audio_position.alpha": torch.ones(1),
        "ar_predict_layer.weight": head,
    }
    for i in range(cfg.layers):
        p = f"h.layers.{i}."
        weights.update(
            {
                p + "self_attn.in_proj_weight": rand(3 * h, h),
                p + "self_attn.in_proj_bias": torch.zeros(3 * h),
                p + "self_attn.out_proj.weight": rand(h, h),
                p + "self_attn.out_proj.bias": torch.zeros(h),
                p + "linear1.weight": rand(cfg.ffn, h),
                p + "linear1.bias": torch.zeros(cfg.ffn),
                p + "linear2.weight": rand(h, cfg.ffn),
                p + "linear2.bias": torch.zeros(h),
                p + "norm1.weight": torch.ones(h),
                p + "norm1.bias": torch.zeros(h),
                p + "norm2.weight": torch.ones(h),
                p + "norm2.bias": torch.zeros(h),
            }
        )
    config = {
        "model": {
            "hidden_dim": h,
            "embedding_dim": h,
            "head": cfg.heads,
            "n_layer": cfg.layers,
            "vocab_size": cfg.vocab,
            "phoneme_vocab_size": cfg.phoneme_vocab,
            "dropout": 0.0,
            "EOS": cfg.eos,
        }
    }
    torch.save({"weight": {"model." + k: v for k, v in weights.items()}, "config": config}, path)


def sovits_hps(cfg: SoVITSConfig) -> dict[str, Any]:
    """The ``config`` an s2 file carries for ``cfg``, as a trained v2 checkpoint has it: the model's
    sizes and the data settings, and the training-only ones upstream's ``SynthesizerTrn`` needs to
    be built (``p_dropout``, ``segment_size``, ``n_speakers`` and the like)."""
    return {
        "train": {"segment_size": 20480},
        "data": {
            "sampling_rate": cfg.sampling_rate,
            "filter_length": cfg.filter_length,
            "hop_length": cfg.hop_length,
            "win_length": cfg.win_length,
            "n_speakers": 300,
        },
        "model": {
            "inter_channels": cfg.inter_channels,
            "hidden_channels": cfg.hidden_channels,
            "filter_channels": cfg.filter_channels,
            "n_heads": cfg.n_heads,
            "n_layers": cfg.n_layers,
            "kernel_size": cfg.kernel_size,
            "p_dropout": 0.1,
            "resblock": cfg.resblock,
            "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in cfg.resblock_dilation_sizes],
            "upsample_rates": list(cfg.upsample_rates),
            "upsample_initial_channel": cfg.upsample_initial_channel,
            "upsample_kernel_sizes": list(cfg.upsample_kernel_sizes),
            "n_layers_q": 3,
            "use_spectral_norm": False,
            "gin_channels": cfg.gin_channels,
            "semantic_frame_rate": cfg.semantic_frame_rate,
            "freeze_quantizer": True,
            "version": "v2",
        },
    }


def write_sovits_checkpoint(path: Path, cfg: SoVITSConfig, seed: int) -> None:
    """Random SoVITS v2 weights as a real s2 ``.pth`` (fp16, header tag ``04``)."""
    gen = torch.Generator().manual_seed(seed)
    weights: dict[str, torch.Tensor] = {}

    def conv(name: str, out_ch: int, in_ch: int, kernel: int = 1, bias: bool = True) -> None:
        weights[name + ".weight"] = torch.randn(out_ch, in_ch, kernel, generator=gen) / (in_ch * kernel) ** 0.5
        if bias:
            weights[name + ".bias"] = torch.zeros(out_ch)

    def encoder(name: str, layers: int, h: int = cfg.hidden_channels) -> None:
        for i in range(layers):
            for p in ("q", "k", "v", "o"):
                conv(f"{name}.attn_layers.{i}.conv_{p}", h, h)
            for e in ("k", "v"):
                weights[f"{name}.attn_layers.{i}.emb_rel_{e}"] = (
                    torch.randn(1, 9, h // cfg.n_heads, generator=gen) * 0.1
                )
            conv(f"{name}.ffn_layers.{i}.conv_1", cfg.filter_channels, h, cfg.kernel_size)
            conv(f"{name}.ffn_layers.{i}.conv_2", h, cfg.filter_channels, cfg.kernel_size)
            for n in (1, 2):
                weights[f"{name}.norm_layers_{n}.{i}.gamma"] = torch.ones(h)
                weights[f"{name}.norm_layers_{n}.{i}.beta"] = torch.zeros(h)

    h, inter = cfg.hidden_channels, cfg.inter_channels
    conv("ssl_proj", 768, 768, cfg.frames_per_token)
    conv("enc_p.ssl_proj", h, 768)
    encoder("enc_p.encoder_ssl", cfg.n_layers // 2)
    encoder("enc_p.encoder_text", cfg.n_layers)
    encoder("enc_p.encoder2", cfg.n_layers // 2)
    weights["enc_p.text_embedding.weight"] = torch.randn(732, h, generator=gen) * 0.3
    for p in ("q", "k", "v", "o"):
        conv(f"enc_p.mrte.cross_attention.conv_{p}", 512, 512)
    conv("enc_p.mrte.c_pre", 512, h)
    conv("enc_p.mrte.text_pre", 512, h)
    conv("enc_p.mrte.c_post", h, 512)
    conv("enc_p.proj", 2 * inter, h)
    weights["quantizer.vq.layers.0._codebook.embed"] = torch.randn(1024, 768, generator=gen)
    for f in range(cfg.flows):
        name = f"flow.flows.{2 * f}"
        conv(name + ".pre", h, inter // 2)
        conv(name + ".enc.cond_layer", 2 * h * cfg.flow_layers, cfg.gin_channels)
        for i in range(cfg.flow_layers):
            conv(f"{name}.enc.in_layers.{i}", 2 * h, h, cfg.flow_kernel)
            conv(f"{name}.enc.res_skip_layers.{i}", 2 * h if i < cfg.flow_layers - 1 else h, h)
        conv(name + ".post", inter // 2, h)
    ch = cfg.upsample_initial_channel
    conv("dec.conv_pre", ch, inter, 7)
    conv("dec.cond", ch, cfg.gin_channels)
    block = 0
    for i, k in enumerate(cfg.upsample_kernel_sizes):
        weights[f"dec.ups.{i}.weight"] = torch.randn(ch, ch // 2, k, generator=gen) / (ch * k / 2) ** 0.5
        weights[f"dec.ups.{i}.bias"] = torch.zeros(ch // 2)
        ch //= 2
        for rk, dilations in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
            for j in range(len(dilations)):
                conv(f"dec.resblocks.{block}.convs1.{j}", ch, ch, rk)
                conv(f"dec.resblocks.{block}.convs2.{j}", ch, ch, rk)
            block += 1
    conv("dec.conv_post", 1, ch, 7, bias=False)
    for name, out_f, in_f in (
        ("spectral.0.fc", 128, cfg.style_bins),
        ("spectral.3.fc", 128, 128),
        ("slf_attn.w_qs", 128, 128),
        ("slf_attn.w_ks", 128, 128),
        ("slf_attn.w_vs", 128, 128),
        ("slf_attn.fc", 128, 128),
        ("fc.fc", cfg.gin_channels, 128),
    ):
        weights[f"ref_enc.{name}.weight"] = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
        weights[f"ref_enc.{name}.bias"] = torch.zeros(out_f)
    for i in range(2):
        conv(f"ref_enc.temporal.{i}.conv1.conv", 256, 128, 5)
    hps = sovits_hps(cfg)
    buffer = io.BytesIO()
    torch.save({"weight": {k: v.half() for k, v in weights.items()}, "config": hps, "info": "random"}, buffer)
    path.write_bytes(b"04" + buffer.getvalue()[2:])


def write_voice(
    directory: Path,
    size: str = "tiny",
    seed: int = 0,
    eos_scale: float = 0.0,
    settings: dict[str, Any] | None = None,
) -> Path:
    """A complete voice directory (``size``: ``tiny`` for tests, ``v2`` for the released sizes);
    ``settings`` are extra ``voice.json`` keys.  Returns ``directory``."""
    t2s = T2SConfig.tiny() if size == "tiny" else T2SConfig()
    sovits = SoVITSConfig.tiny() if size == "tiny" else SoVITSConfig()
    directory.mkdir(parents=True, exist_ok=True)
    write_t2s_checkpoint(directory / "gpt.ckpt", t2s, seed, eos_scale)
    write_sovits_checkpoint(directory / "sovits.pth", sovits, seed)
    rate = sovits.sampling_rate
    t = np.arange(int(3.5 * rate)) / rate
    phase = 2 * np.pi * np.cumsum(130 + 15 * np.sin(2 * np.pi * 3 * t)) / rate
    wave = 0.3 * sum(np.sin(k * phase) / k for k in range(1, 6))
    import soundfile  # here, so the checkpoint writers need only torch (a bare GPU machine has no libsndfile)

    soundfile.write(directory / "reference.wav", wave.astype(np.float32), rate)
    rng = np.random.default_rng(seed)
    np.save(directory / "reference.semantic.npy", rng.integers(0, t2s.eos, int(3.5 * 25)).astype(np.int64))
    spec = {
        "id": directory.name,
        "gpt_weights": "gpt.ckpt",
        "sovits_weights": "sovits.pth",
        "reference_audio": "reference.wav",
        "reference_text": "A short reference sentence, read clearly.",
        "prompt_tokens": "reference.semantic.npy",
        **(settings or {}),
    }
    (directory / "voice.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return directory

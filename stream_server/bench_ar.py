"""``streamvox bench ar``: GPT-SoVITS T2S decode speed, ours against the reference, in one run.

Both run the v2 dimensions (24 layers, width 512, 16 heads) with the same
random weights, written once as a real-format s1 checkpoint, on the same
prompt (``--text-len`` phoneme ids, ``--prompt-len`` semantic tokens).  Ours
decodes ``--tokens`` steps at batch 1, 4 and 16 (one slot per stream, all in
one batched step), with fp32 weights and with int8 linear weights; the
reference (``gpt-sovits-cpufast``'s ``infer_panel``, in a child process with
``--reference`` on its path) decodes the same number of tokens at batch 1.
The end-of-speech row of the output head is zero, far below the top 15
logits, so every run decodes ``--tokens`` tokens.

Streaming (batch 1, fp32 and int8 T2S): random v2-size SoVITS weights are
written as a real-format s2 file; one utterance of ``--tokens`` tokens is
generated and vocoded chunk by chunk (:class:`ChunkSchedule` defaults) the way
a session will be served.  It reports the first-chunk latency (prefill start
to the first audio chunk, the speaker vector precomputed as a loaded voice
has it), the RTF (all compute / audio length), the vocoder's own one-shot
RTF, and the streamed audio's SNR against the one-shot decode of the same
tokens (random weights attend more diffusely than trained ones, so this is a
floor, not the figure a real voice gets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

V2_CONFIG = {
    "model": {
        "hidden_dim": 512,
        "embedding_dim": 512,
        "head": 16,
        "n_layer": 24,
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "dropout": 0.0,
        "EOS": 1024,
    }
}

_REFERENCE_RUN = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from AR.models.t2s_model import Text2SemanticDecoder
job = json.loads(sys.argv[1])
ckpt = torch.load(job["checkpoint"], map_location="cpu", weights_only=True)
model = Text2SemanticDecoder(ckpt["config"])
model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["weight"].items()})
model.rebuild_t2s_transformer()
model.eval()
x = torch.tensor([job["phonemes"]]); prompt = torch.tensor([job["prompt"]])
bert = torch.zeros(1, 1024, x.shape[1])
def run(n):
    return model.infer_panel(x, torch.tensor([x.shape[1]]), prompt, bert, top_k=15, early_stop_num=n - 1)
with torch.no_grad():
    run(4)
    started = time.perf_counter()
    y, _ = run(job["tokens"])
    elapsed = time.perf_counter() - started
print(json.dumps({"tokens": int(y.shape[1] - prompt.shape[1]), "seconds": elapsed}))
"""


def _write_checkpoint(path: Path, seed: int) -> None:
    """Random v2-size weights (scaled like a trained model's); the end-of-speech logit is always 0."""
    from streamvox.engine.gpt_sovits_t2s import T2SConfig

    cfg = T2SConfig.from_checkpoint(V2_CONFIG)
    gen = torch.Generator().manual_seed(seed)
    h = cfg.hidden

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.02

    head = rand(cfg.vocab, h)
    head[cfg.eos] = 0.0
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
    torch.save({"weight": {"model." + k: v for k, v in weights.items()}, "config": V2_CONFIG}, path)


def _ours(
    checkpoint: Path, batch: int, phonemes: list[int], prompt: list[int], tokens: int, int8: bool
) -> dict[str, Any]:
    from streamvox.engine.ar_checkpoint import load_s1
    from streamvox.engine.ar_generate import TokenStream, advance, choose
    from streamvox.engine.ar_sampler import EosPolicy, SamplingParams
    from streamvox.engine.gpt_sovits_t2s import T2SConfig, T2SDecoder

    loaded = load_s1(checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    max_len = len(phonemes) + len(prompt) + tokens + 8
    decoder = T2SDecoder(loaded.weights, cfg, slots=batch, max_len=max_len, int8=int8)
    policy = EosPolicy(eos=cfg.eos, max_steps=tokens)
    started = time.perf_counter()
    streams = []
    for slot in range(batch):
        first = decoder.prefill(slot, torch.tensor(phonemes), torch.tensor(prompt))
        streams.append(TokenStream.start(slot, first, torch.tensor(prompt), SamplingParams(), seed=slot))
    prefilled = time.perf_counter()
    while not all(s.done for s in streams):
        advance(decoder, streams, [None if s.done else choose(s, policy) for s in streams])
    finished = time.perf_counter()
    produced = sum(len(s.tokens) for s in streams)
    return {
        "weights": "int8" if int8 else "fp32",
        "batch": batch,
        "tokens": produced,
        "prefill_s": prefilled - started,
        "decode_s": finished - prefilled,
        "tokens_per_s": produced / (finished - started),
        "decode_tokens_per_s": produced / (finished - prefilled),
    }


def _write_sovits_checkpoint(path: Path, seed: int) -> None:
    """Random SoVITS v2 weights of the released sizes, written as a real s2 file (fp16, tag ``04``)."""
    import io

    from streamvox.engine.gpt_sovits_vits import SoVITSConfig

    cfg = SoVITSConfig()
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
    hps = {
        "data": {"sampling_rate": 32000, "filter_length": 2048, "hop_length": 640, "win_length": 2048},
        "model": {
            "inter_channels": inter,
            "hidden_channels": h,
            "filter_channels": cfg.filter_channels,
            "n_heads": cfg.n_heads,
            "n_layers": cfg.n_layers,
            "kernel_size": cfg.kernel_size,
            "resblock": cfg.resblock,
            "resblock_kernel_sizes": list(cfg.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in cfg.resblock_dilation_sizes],
            "upsample_rates": list(cfg.upsample_rates),
            "upsample_initial_channel": cfg.upsample_initial_channel,
            "upsample_kernel_sizes": list(cfg.upsample_kernel_sizes),
            "gin_channels": cfg.gin_channels,
            "semantic_frame_rate": "25hz",
            "version": "v2",
        },
    }
    buffer = io.BytesIO()
    torch.save({"weight": {k: v.half() for k, v in weights.items()}, "config": hps, "info": "random"}, buffer)
    path.write_bytes(b"04" + buffer.getvalue()[2:])


def _streaming(
    t2s_checkpoint: Path, s2_checkpoint: Path, phonemes: list[int], prompt: list[int], tokens: int, int8: bool
) -> dict[str, Any]:
    """One utterance generated and vocoded chunk by chunk at batch 1."""
    import numpy as np
    from streamvox.engine.ar_checkpoint import load_s1
    from streamvox.engine.ar_generate import TokenStream, advance, choose
    from streamvox.engine.ar_sampler import EosPolicy, SamplingParams
    from streamvox.engine.gpt_sovits_t2s import T2SConfig, T2SDecoder
    from streamvox.engine.gpt_sovits_vits import SoVITSDecoder
    from streamvox.engine.token_vocoder import ChunkSchedule, StreamingVocoder

    loaded = load_s1(t2s_checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    t2s = T2SDecoder(loaded.weights, cfg, slots=1, max_len=len(phonemes) + len(prompt) + tokens + 8, int8=int8)
    sovits = SoVITSDecoder.load(s2_checkpoint)
    rate = sovits.config.sampling_rate
    t = np.arange(3 * rate) / rate
    speaker = sovits.speaker(sovits.reference_spectrogram((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)))
    schedule = ChunkSchedule()
    target = torch.tensor(phonemes)
    vocoder = StreamingVocoder(sovits, target, speaker, schedule, seed=0)
    policy = EosPolicy(eos=cfg.eos, max_steps=tokens)
    # Warm-up, as a served voice is warm: first calls allocate and pick kernels.
    warm = TokenStream.start(0, t2s.prefill(0, target, torch.tensor(prompt)), torch.tensor(prompt), SamplingParams(), 0)
    advance(t2s, [warm], [choose(warm, policy)])
    t2s.release(0)
    sovits.decode([0] * (schedule.first + schedule.lookahead), target, speaker)
    chunks: list[tuple[float, int]] = []
    started = time.perf_counter()
    first = t2s.prefill(0, target, torch.tensor(prompt))
    stream = TokenStream.start(0, first, torch.tensor(prompt), SamplingParams(), seed=0)
    pieces = []
    while not stream.done:
        token = choose(stream, policy)
        advance(t2s, [stream], [token])
        if token is not None:
            vocoder.add([token])
        while vocoder.pending():
            pieces.append(vocoder.decode())
            chunks.append((time.perf_counter() - started, len(pieces[-1])))
    pieces.append(vocoder.finish())
    elapsed = time.perf_counter() - started
    chunks.append((elapsed, len(pieces[-1])))
    streamed = np.concatenate(pieces)
    audio_s = len(streamed) / rate
    one_shot_started = time.perf_counter()
    offline = sovits.decode(stream.tokens, target, speaker, seed=0).numpy()
    one_shot_s = time.perf_counter() - one_shot_started
    error = float(np.sum((streamed - offline) ** 2))
    return {
        "weights": "int8" if int8 else "fp32",
        "tokens": len(stream.tokens),
        "audio_s": audio_s,
        "first_chunk_ms": 1000 * chunks[0][0],
        "first_chunk_audio_ms": 1000 * chunks[0][1] / rate,
        "chunks": len(chunks),
        "rtf": elapsed / audio_s,
        "vocoder_one_shot_rtf": one_shot_s / audio_s,
        "streamed_vs_one_shot_snr_db": 10 * np.log10(float(np.sum(offline**2)) / error) if error > 0 else None,
        "schedule": {
            "first": schedule.first,
            "cap": schedule.cap,
            "lookahead": schedule.lookahead,
            "left_context": schedule.left_context,
            "overlap": schedule.overlap,
        },
    }


def _reference(reference: Path, checkpoint: Path, phonemes: list[int], prompt: list[int], tokens: int) -> Any:
    job = {"checkpoint": str(checkpoint), "phonemes": phonemes, "prompt": prompt, "tokens": tokens}
    env = dict(os.environ, PYTHONPATH=f"{reference / 'GPT_SoVITS'}{os.pathsep}{reference}")
    threads = str(torch.get_num_threads())
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE_RUN, json.dumps(job), threads], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    phonemes = torch.randint(0, 732, (args.text_len,), generator=gen).tolist()
    prompt = torch.randint(0, 1024, (args.prompt_len,), generator=gen).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "t2s-v2-random.ckpt"
        _write_checkpoint(checkpoint, seed=0)
        s2 = Path(tmp) / "s2-v2-random.pth"
        _write_sovits_checkpoint(s2, seed=0)
        reference = None
        if args.reference:
            reference = _reference(Path(args.reference), checkpoint, phonemes, prompt, args.tokens)
        ours = [
            _ours(checkpoint, b, phonemes, prompt, args.tokens, int8) for int8 in (False, True) for b in args.batches
        ]
        streaming = [_streaming(checkpoint, s2, phonemes, prompt, args.tokens, int8) for int8 in (False, True)]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "tokens_per_stream": args.tokens,
        "text_len": args.text_len,
        "prompt_len": args.prompt_len,
        "ours": ours,
        "reference": reference,
        "streaming": streaming,
    }
    for kind in ("fp32", "int8"):
        rows = [r for r in ours if r["weights"] == kind]
        one = next((r for r in rows if r["batch"] == 1), None)
        if one is None:
            continue
        for row in rows:
            row["throughput_vs_batch1"] = row["tokens_per_s"] / one["tokens_per_s"]
        if reference:
            result[f"speedup_vs_reference_batch1_{kind}"] = one["tokens_per_s"] / reference["tokens_per_s"]
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench ar — {result['date']}, {result['machine']}; GPT-SoVITS v2 T2S, random weights, "
        f"{result['tokens_per_stream']} tokens per stream, text {result['text_len']} + prompt {result['prompt_len']}",
        "  system                   batch  tokens/s (incl. prefill)  decode tokens/s  x batch 1",
    ]
    for r in result["ours"]:
        lines.append(
            f"  streamvox {r['weights']:<14} {r['batch']:>5} {r['tokens_per_s']:>25.1f}"
            f" {r['decode_tokens_per_s']:>16.1f} {r.get('throughput_vs_batch1', float('nan')):>10.2f}"
        )
    ref = result["reference"]
    if ref:
        lines.append(f"  gpt-sovits-cpufast           1 {ref['tokens_per_s']:>25.1f}")
    for kind in ("fp32", "int8"):
        if f"speedup_vs_reference_batch1_{kind}" in result:
            ratio = result[f"speedup_vs_reference_batch1_{kind}"]
            lines.append(f"  batch 1, streamvox {kind} / reference (fp32): {ratio:.2f}x")
    lines.append(
        "  streaming, batch 1 (T2S + SoVITS chunks)   first chunk  its audio   RTF   vocoder RTF  SNR vs one-shot"
    )
    for r in result["streaming"]:
        snr = r["streamed_vs_one_shot_snr_db"]
        lines.append(
            f"  streamvox {r['weights']:<31} {r['first_chunk_ms']:>8.0f} ms {r['first_chunk_audio_ms']:>6.0f} ms"
            f" {r['rtf']:>6.3f} {r['vocoder_one_shot_rtf']:>11.3f} {'' if snr is None else f'{snr:.1f} dB':>16}"
        )
    return "\n".join(lines)


def run_ar_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(json.dumps(result) if args.json else _table(result))
    return 0

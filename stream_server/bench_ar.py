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

Not measured yet: first-chunk latency and RTF, which need the SoVITS decoder
(not built yet).
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
        reference = None
        if args.reference:
            reference = _reference(Path(args.reference), checkpoint, phonemes, prompt, args.tokens)
        ours = [
            _ours(checkpoint, b, phonemes, prompt, args.tokens, int8) for int8 in (False, True) for b in args.batches
        ]
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "tokens_per_stream": args.tokens,
        "text_len": args.text_len,
        "prompt_len": args.prompt_len,
        "ours": ours,
        "reference": reference,
        "first_chunk_latency_ms": None,
        "rtf": None,
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
    lines.append("  first-chunk latency and RTF: not measured yet (the SoVITS decoder is not built)")
    return "\n".join(lines)


def run_ar_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(json.dumps(result) if args.json else _table(result))
    return 0

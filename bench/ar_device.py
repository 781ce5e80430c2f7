"""``streamvox bench ar-device``: GPT-SoVITS's fixed-shape T2S step on a device, eager against compiled
and graph-replayed, in one run (issue 16, item 6: what ``scripts/gpu_check.sh`` runs on a GPU).

Random v2-size weights in the real file formats, as ``bench ar`` uses.  On
``--device`` with T2S in ``--dtype``, for each step mode (``variable``, the
CPU's default, and the fixed-shape modes of
:data:`~streamvox.engine.ar.fixed_step.MODES`):

* **Tokens**: ``--check-batch`` streams with distinct prompts decode greedily
  for ``--check-tokens`` steps; each mode's tokens are set against the eager
  fixed-shape step's.  In float32 on a CPU they are equal (also a unit test);
  compiled kernels may round bfloat16 differently, so the first step where a
  stream differs is printed, not hidden.
* **Speed**: at each ``--batches`` size every slot is live; ms per step (the
  model's call, logits back on the host) beside the host's sampling ms per
  step, tokens/s, and the step's memory floor: the weights and every slot's
  cache over the width it reads, over the bandwidth measured on the device in
  this run.
* **Streaming, batch 1**: ``bench ar``'s streamed utterance (prefill, steps,
  SoVITS chunks, bf16 HiFi-GAN when ``--dtype bfloat16``) through the mode:
  first chunk, RTF, and SNR against the one-shot decode.
* **Real-time streams (estimated)**: the largest batch whose audio second
  costs less than a second of the device, from the measured figures: 25
  steps and samplings at that batch plus that many streams' vocoder time at
  the batch-1 vocoder RTF (SoVITS windows are not batched).  It is an
  estimate from measurements, not a load run.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from streamvox.bench.ar import streaming_run
from streamvox.bench.hardware import memory_bandwidth_gbs
from streamvox.bench.random_voice import write_sovits_checkpoint, write_t2s_checkpoint
from streamvox.engine.ar.fixed_step import MODES, STEPS, FixedShapeStep
from streamvox.engine.ar.generate import TokenModel, TokenStream, advance, choose_all, generate
from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig
from streamvox.engine.backends.gpt_sovits.voice import DTYPES

TOKENS_PER_AUDIO_S = 25


def default_modes(device: str) -> list[str]:
    """Every mode the device can run."""
    graph_capable = torch.device(device).type == "cuda"
    return ["variable", *(m for m in MODES if graph_capable or not m.endswith("cuda-graph"))]


def step_bytes(cfg: T2SConfig, element: int, slots: int, width: float) -> float:
    """Bytes one step reads: every weight (linears, biases and the head, ``element`` bytes each)
    and ``slots`` slots' keys and values over ``width`` positions in every layer."""
    h, f = cfg.hidden, cfg.ffn
    weights = cfg.layers * (4 * h * h + 2 * h * f + 5 * h + f) + cfg.vocab * h
    return element * (weights + 2 * cfg.layers * slots * width * h)


def _stepper(decoder: T2SDecoder, mode: str) -> TokenModel:
    return decoder if mode == "variable" else FixedShapeStep(decoder, mode)


def _streams(decoder: T2SDecoder, phonemes: list[int], prompt: list[int], params: SamplingParams) -> list[TokenStream]:
    """One stream per slot, each prompt rotated by its slot so the streams differ."""
    streams = []
    for slot in range(decoder.slots):
        own = torch.tensor(prompt[slot % len(prompt) :] + prompt[: slot % len(prompt)])
        first = decoder.prefill(slot, torch.tensor(phonemes), own)
        streams.append(TokenStream.start(slot, first, own, params, seed=slot))
    return streams


def check_tokens(
    weights: dict[str, torch.Tensor], cfg: T2SConfig, args: argparse.Namespace, phonemes: list[int], prompt: list[int]
) -> dict[str, Any]:
    """Greedy tokens of ``--check-batch`` streams through each mode, against the eager fixed step's."""
    max_len = len(phonemes) + len(prompt) + args.check_tokens + 8
    greedy = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.35)
    runs: dict[str, list[list[int]]] = {}
    for mode in ["eager", *(m for m in args.modes if m != "eager")]:
        decoder = T2SDecoder(
            weights, cfg, slots=args.check_batch, max_len=max_len, device=args.device, dtype=DTYPES[args.dtype]
        )
        stepper = _stepper(decoder, mode)
        streams = _streams(decoder, phonemes, prompt, greedy)
        runs[mode] = generate(stepper, streams, EosPolicy(eos=cfg.eos, max_steps=args.check_tokens))
    result = {}
    for mode, tokens in runs.items():
        divergence = [
            next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
            for ours, theirs in zip(tokens, runs["eager"], strict=True)
        ]
        result[mode] = {
            "equal": tokens == runs["eager"],
            "first_divergence_step": min((d for d in divergence if d is not None), default=None),
            "tokens_per_stream": [len(t) for t in tokens],
        }
    return result


def decode_speed(
    weights: dict[str, torch.Tensor],
    cfg: T2SConfig,
    args: argparse.Namespace,
    phonemes: list[int],
    prompt: list[int],
    mode: str,
    batch: int,
    bandwidth_gbs: float,
) -> dict[str, Any]:
    """``batch`` streams decoded ``--tokens`` steps together through ``mode``."""
    max_len = len(phonemes) + len(prompt) + args.tokens + 8
    dtype = DTYPES[args.dtype]
    decoder = T2SDecoder(weights, cfg, slots=batch, max_len=max_len, device=args.device, dtype=dtype)
    compile_started = time.perf_counter()
    stepper = _stepper(decoder, mode)  # a CUDA graph is captured here
    streams = _streams(decoder, phonemes, prompt, SamplingParams())
    policy = EosPolicy(eos=cfg.eos, max_steps=args.tokens)
    for _ in range(3):  # warm-up: a compiled step compiles on its first call
        advance(stepper, streams, choose_all(streams, [policy] * len(streams)))
    warm_s = time.perf_counter() - compile_started
    for slot in range(batch):
        decoder.release(slot)
    streams = _streams(decoder, phonemes, prompt, SamplingParams())
    sample_s = step_s = 0.0
    steps = 0
    while not all(s.done for s in streams):
        started = time.perf_counter()
        chosen = choose_all(streams, [policy] * len(streams))
        sampled = time.perf_counter()
        advance(stepper, streams, chosen)
        step_s += time.perf_counter() - sampled
        sample_s += sampled - started
        steps += 1
    produced = sum(len(s.tokens) for s in streams)
    # The variable step reads up to the longest slot (half-way on average); the fixed one all of it.
    width = max_len if mode != "variable" else len(phonemes) + len(prompt) + (steps + 1) / 2
    floor_s = step_bytes(cfg, dtype.itemsize, batch, width) / (bandwidth_gbs * 1e9)
    return {
        "mode": mode,
        "batch": batch,
        "steps": steps,
        "warm_up_s": warm_s,
        "step_ms": 1000 * step_s / steps,
        "sample_ms": 1000 * sample_s / steps,
        "tokens_per_s": produced / (step_s + sample_s),
        "floor_ms": 1000 * floor_s,
        "ratio_to_floor": step_s / steps / floor_s,
    }


def real_time_streams(speed: list[dict[str, Any]], vocoder_rtf: float) -> dict[str, Any]:
    """The largest measured batch whose audio second costs under one device second (see the module docstring)."""
    best, load = 0, None
    for row in sorted(speed, key=lambda r: r["batch"]):
        cost = TOKENS_PER_AUDIO_S * (row["step_ms"] + row["sample_ms"]) / 1000 + row["batch"] * vocoder_rtf
        if cost <= 1.0:
            best, load = row["batch"], cost
    return {"streams": best, "device_s_per_s": load}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(1)
    phonemes = torch.randint(0, 732, (args.text_len,), generator=gen).tolist()
    prompt = torch.randint(0, 1024, (args.prompt_len,), generator=gen).tolist()
    cfg = T2SConfig()
    bandwidth = memory_bandwidth_gbs(device=args.device)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {_device_name(args.device)}",
        "device": args.device,
        "dtype": args.dtype,
        "tokens_per_stream": args.tokens,
        "bandwidth_gbs": bandwidth,
        "modes": args.modes,
    }
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "t2s-v2-random.ckpt"
        write_t2s_checkpoint(checkpoint, cfg, seed=0)
        s2 = Path(tmp) / "s2-v2-random.pth"
        write_sovits_checkpoint(s2, SoVITSConfig(), seed=0)
        weights = load_s1(checkpoint).weights
        result["tokens"] = check_tokens(weights, cfg, args, phonemes, prompt)
        result["speed"] = [
            decode_speed(weights, cfg, args, phonemes, prompt, mode, batch, bandwidth)
            for mode in args.modes
            for batch in args.batches
        ]
        result["streaming"] = [
            streaming_run(
                checkpoint,
                s2,
                phonemes,
                prompt,
                args.tokens,
                int8=False,
                bf16_vocoder=args.dtype == "bfloat16",
                device=args.device,
                dtype=DTYPES[args.dtype],
                step=mode,
            )
            for mode in args.modes
        ]
    result["real_time_streams"] = {
        run["step"]: real_time_streams([r for r in result["speed"] if r["mode"] == run["step"]], run["vocoder_rtf"])
        for run in result["streaming"]
    }
    return result


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench ar-device — {result['date']}, {result['machine']}; GPT-SoVITS v2 T2S, random weights,"
        f" {result['dtype']} on {result['device']}, {result['tokens_per_stream']} tokens per stream;"
        f" memory bandwidth {result['bandwidth_gbs']:.0f} GB/s",
        "  tokens against the eager fixed-shape step (greedy):",
    ]
    for mode, check in result["tokens"].items():
        verdict = "equal" if check["equal"] else f"differ from step {check['first_divergence_step']}"
        lines.append(f"    {mode:<20} {verdict}")
    lines.append("  mode                 batch  ms/step  sample ms  tokens/s  floor ms  ratio  warm-up s")
    for r in result["speed"]:
        lines.append(
            f"  {r['mode']:<20} {r['batch']:>5} {r['step_ms']:>8.2f} {r['sample_ms']:>10.2f} {r['tokens_per_s']:>9.0f}"
            f" {r['floor_ms']:>9.3f} {r['ratio_to_floor']:>6.1f} {r['warm_up_s']:>10.1f}"
        )
    lines.append("  streaming, batch 1   first chunk = prefill + T2S + vocoder   RTF = T2S + vocoder   SNR vs one-shot")
    for r in result["streaming"]:
        snr = r["streamed_vs_one_shot_snr_db"]
        lines.append(
            f"  {r['step']:<20} {r['first_chunk_ms']:>7.1f} ms = {r['first_chunk_prefill_ms']:.1f}"
            f" + {r['first_chunk_t2s_ms'] - r['first_chunk_prefill_ms']:.1f} + {r['first_chunk_vocoder_ms']:.1f}"
            f"   {r['rtf']:.4f} = {r['t2s_rtf']:.4f} + {r['vocoder_rtf']:.4f}"
            f"   {'' if snr is None else f'{snr:.1f} dB'}"
        )
    lines.append("  real-time streams (estimated from the measured step, sampling and vocoder costs):")
    for mode, streams in result["real_time_streams"].items():
        load = streams["device_s_per_s"]
        lines.append(
            f"    {mode:<20} {streams['streams']:>4}" + ("" if load is None else f"  ({load:.2f} device s per audio s)")
        )
    return "\n".join(lines)


def run_ar_device_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    unknown = sorted(set(args.modes or ()) - set(STEPS))
    if unknown:
        raise SystemExit(f"bench ar-device: unknown modes {unknown}; choose from {', '.join(STEPS)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"bench ar-device: {args.device} asked for, but CUDA is not available here")
    args.dtype = args.dtype or ("bfloat16" if torch.device(args.device).type == "cuda" else "float32")
    args.modes = args.modes or default_modes(args.device)
    result = measure(args)
    print(json.dumps(result) if args.json else table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0

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
to the first audio chunk, the speaker vector precomputed and the window sizes
warmed up as a loaded voice has them), the RTF (all compute / audio length),
the vocoder's own one-shot RTF (warm), and the streamed audio's SNR against the one-shot decode of the same
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
from streamvox.bench.random_voice import write_sovits_checkpoint, write_t2s_checkpoint
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig

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


def _ours(
    checkpoint: Path, batch: int, phonemes: list[int], prompt: list[int], tokens: int, int8: bool
) -> dict[str, Any]:
    from streamvox.engine.ar.generate import TokenStream, advance, choose
    from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
    from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
    from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder

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


def _streaming(
    t2s_checkpoint: Path,
    s2_checkpoint: Path,
    phonemes: list[int],
    prompt: list[int],
    tokens: int,
    int8: bool,
    bf16_vocoder: bool = False,
) -> dict[str, Any]:
    """One utterance generated and vocoded chunk by chunk at batch 1."""
    import numpy as np
    from streamvox.engine.ar.generate import TokenStream, advance, choose
    from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
    from streamvox.engine.ar.token_vocoder import ChunkSchedule, StreamingVocoder
    from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
    from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder
    from streamvox.engine.backends.gpt_sovits.vits import SoVITSDecoder, UtteranceDecoder

    loaded = load_s1(t2s_checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    t2s = T2SDecoder(loaded.weights, cfg, slots=1, max_len=len(phonemes) + len(prompt) + tokens + 8, int8=int8)
    sovits = SoVITSDecoder.load(s2_checkpoint, bf16_vocoder=bf16_vocoder)
    rate = sovits.config.sampling_rate
    t = np.arange(3 * rate) / rate
    speaker = sovits.speaker(sovits.reference_spectrogram((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)))
    schedule = ChunkSchedule()
    target = torch.tensor(phonemes)
    vocoder = StreamingVocoder(UtteranceDecoder(sovits, target.reshape(1, -1), speaker, 0.5, 0), schedule)
    policy = EosPolicy(eos=cfg.eos, max_steps=tokens)
    # Warm-up, as a served voice is warm: first calls allocate and pick kernels.
    warm = TokenStream.start(0, t2s.prefill(0, target, torch.tensor(prompt)), torch.tensor(prompt), SamplingParams(), 0)
    advance(t2s, [warm], [choose(warm, policy)])
    t2s.release(0)
    for window in schedule.window_sizes():  # what a loaded voice's warm_up does
        sovits.decode([0] * window, target, speaker)
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
    sovits.decode(stream.tokens, target, speaker, seed=0)  # this length's one-off setup, untimed
    one_shot_started = time.perf_counter()
    offline = sovits.decode(stream.tokens, target, speaker, seed=0).numpy()
    one_shot_s = time.perf_counter() - one_shot_started
    error = float(np.sum((streamed - offline) ** 2))
    return {
        "weights": ("int8" if int8 else "fp32") + (" + bf16 vocoder" if bf16_vocoder else ""),
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
        write_t2s_checkpoint(checkpoint, T2SConfig(), seed=0)
        s2 = Path(tmp) / "s2-v2-random.pth"
        write_sovits_checkpoint(s2, SoVITSConfig(), seed=0)
        reference = None
        if args.reference:
            reference = _reference(Path(args.reference), checkpoint, phonemes, prompt, args.tokens)
        ours = [
            _ours(checkpoint, b, phonemes, prompt, args.tokens, int8) for int8 in (False, True) for b in args.batches
        ]
        streaming = [
            _streaming(checkpoint, s2, phonemes, prompt, args.tokens, int8, bf16)
            for int8, bf16 in ((False, False), (True, False), (True, True))
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

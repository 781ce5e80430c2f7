"""``streamvox bench dia``: Dia decode steps against the memory-bandwidth bound and transformers, in one run.

Random weights at Dia-1.6B's real size (or ``--size tiny``), written once in
the transformers layout (``bench/dia_voice.py``) and loaded by our voice
loader and, in a child process with ``--reference`` on its path, by
transformers.  Measured side by side on this machine:

* the memory bandwidth (the best of several full reads of a 1 GiB tensor);
* our decode step at each ``--batches`` size (every request two rows: CFG),
  fp32 and bf16 weights and caches, after a real prefill: ms per step, and the
  bound for that step, bytes it must read (decoder weights, each row's self-
  and cross-attention caches) divided by the bandwidth, and their ratio;
* transformers' ``generate`` (greedy, CFG 3, fp32) on the same directory:
  ms per step from two lengths, the best of three runs of each (so its prefill
  and set-up cancel, and a single slow run does not), and ours at
  batch 1 fp32 against it;
* the encoder's prefill by text length, the DAC's time per window (first
  window and a steady one) against the audio it makes, and after how many
  decoder steps the first audio can be decoded (the delay pattern's 15 rows
  plus the first window and its right context).

Real time (86 steps/s) is out of reach on two CPU cores: what this reports is
how close each step is to what the hardware allows, and how far ahead of the
reference we are.  ``--device cuda`` runs ours on a GPU (the bandwidth is
then the GPU's, and every timing waits for the GPU's queued work); the
reference stays a CPU run, so leave it out there (``--reference ''``).  The
head row of channel 0's EOS is zero, so nothing ends early.
"""

from __future__ import annotations

import argparse
import gc
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
from streamvox.bench.dia_voice import random_dac, write_dia_voice
from streamvox.bench.hardware import memory_bandwidth_gbs, synchronize
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacConfig
from streamvox.engine.backends.dia.text import speaker_text_ids
from streamvox.engine.backends.dia.voice import DiaVoice, DiaVoiceConfig

_TEXT = "[S1] Dia is an open weights text to dialogue model. [S2] You get full control over scripts and voices."

_REFERENCE_RUN = """
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[2]))
from transformers import DiaForConditionalGeneration
from transformers.models.dia.processing_dia import DiaProcessor
job = json.loads(sys.argv[1])
model = DiaForConditionalGeneration.from_pretrained(job["directory"], dtype=torch.float32, local_files_only=True).eval()
cfg = model.config.decoder_config
delays = model.config.delay_pattern
length = 1 + max(delays)
undelayed = torch.full((1, length, cfg.num_channels), cfg.pad_token_id, dtype=torch.int)
undelayed[:, 0] = cfg.bos_token_id
index = DiaProcessor.build_indices(bsz=1, seq_len=length, num_channels=cfg.num_channels, delay_pattern=delays)
delayed = DiaProcessor.apply_audio_delay(audio=undelayed, pad_token_id=cfg.pad_token_id,
                                         bos_token_id=cfg.bos_token_id, precomputed_idx=index)
ids = torch.tensor([job["ids"]])
def run(n):
    started = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=delayed,
                       decoder_attention_mask=torch.ones(1, length, dtype=torch.long), max_new_tokens=n,
                       do_sample=False, guidance_scale=3.0, top_k=45)
    return time.perf_counter() - started
run(2)
# The best of three of each length: the difference of two single runs is noise at tiny sizes.
short = min(run(job["short"]) for _ in range(3))
long = min(run(job["long"]) for _ in range(3))
print(json.dumps({"short_s": short, "long_s": long, "steps": job["long"] - job["short"]}))
"""


def step_bytes(voice: DiaVoice, rows: list[int]) -> int:
    """What one decode step over ``rows`` must read: the decoder's weights (not the embedding
    tables, of which it reads nine rows, nor the cross-attention key and value projections, which
    run once per request), and each row's filled self- and cross-attention caches; a fixed-shape
    step reads every row of the cache over its whole width."""
    network = voice.network
    once = ("model.encoder.", "embeddings.embed.weight", "cross_attention.k_proj", "cross_attention.v_proj")
    decoder_weights = sum(
        p.numel() * p.element_size() for name, p in network.named_parameters() if not any(o in name for o in once)
    )
    d = network.config.decoder
    element = voice.cache.self_k[0].element_size()
    cache = 0
    fixed = voice.stepper is not None
    for row in range(voice.cache.rows) if fixed else rows:
        length = voice.cache.max_len if fixed else int(voice.cache.lengths[row]) + 1
        text = voice.cache.text_mask.shape[1] if fixed else int(voice.cache.text_mask[row].sum())
        cache += (
            d.layers * 2 * element * (d.kv_heads * length * d.head_dim + d.cross_kv_heads * text * d.cross_head_dim)
        )
    return decoder_weights + cache


def _steps(voice: DiaVoice, batch: int, steps: int, bandwidth: float) -> dict[str, Any]:
    """Time ``steps`` batched steps of ``batch`` requests; ``bandwidth`` in bytes per second."""
    requests = [voice.start_segment(i, i, _TEXT, seed=i) for i in range(batch)]
    voice.step(requests)  # the first step after a prefill pays one-off set-up
    rows = [row for r in requests for row in r.rows]
    bound_ms = step_bytes(voice, rows) / bandwidth * 1000
    started = time.perf_counter()
    for _ in range(steps):
        voice.step(requests)
    step_ms = (time.perf_counter() - started) / steps * 1000
    for request in requests:
        voice.release_slot(request.slot)
    return {
        "batch": batch,
        "step_ms": step_ms,
        "bound_ms": bound_ms,
        "ratio_to_bound": step_ms / bound_ms,
        "steps_per_s_per_request": 1000 / step_ms,
        "realtime_factor": 1000 / step_ms / 86.13,
    }


def _prefill_by_length(voice: DiaVoice, lengths: list[int]) -> list[dict[str, Any]]:
    out = []
    device = voice.network.device
    for length in lengths:
        ids = torch.randint(3, 256, (2, length), device=device)
        mask = torch.ones(2, length, dtype=torch.bool, device=device)
        voice.network.encode(ids, mask)
        synchronize(device)
        started = time.perf_counter()
        voice.network.encode(ids, mask)
        synchronize(device)
        out.append({"text_bytes": length, "encoder_ms": (time.perf_counter() - started) * 1000})
    return out


def _dac_windows(dac: DacConfig, first: int, cap: int, context: int, device: str) -> list[dict[str, Any]]:
    codec = random_dac(dac, seed=1).to(device)
    out = []
    for name, frames, emitted in (("first", first + context, first), ("steady", cap + 2 * context, cap)):
        codes = torch.randint(0, dac.codebook_size, (1, dac.codebooks, frames), device=device)
        codec.decode(codes)
        synchronize(device)
        started = time.perf_counter()
        codec.decode(codes)
        synchronize(device)
        ms = (time.perf_counter() - started) * 1000
        audio_ms = emitted * dac.hop / dac.sample_rate * 1000
        out.append({"window": name, "frames_decoded": frames, "frames_kept": emitted, "ms": ms, "rtf": ms / audio_ms})
    return out


def first_audio_steps(directory: Path) -> int:
    """Decoder steps after the prefill until the first DAC window can be decoded (counted on a
    copy of the voice's schedule and delay pattern with tiny weights: it depends on nothing else)."""
    voice = DiaVoice.load(directory)
    request = voice.start_segment(0, 0, _TEXT, seed=0)
    steps = 0
    while not request.vocoder.pending() and request.generating:
        voice.step([request])
        request.feed_vocoder()
        steps += 1
    voice.release_slot(0)
    return steps


def _reference(reference: Path, directory: Path, ids: list[int], short: int, long: int) -> dict[str, Any]:
    job = {"directory": str(directory), "ids": ids, "short": short, "long": long}
    env = dict(os.environ, PYTHONPATH=str(reference), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE_RUN, json.dumps(job), str(torch.get_num_threads())],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["step_ms"] = (result["long_s"] - result["short_s"]) / result["steps"] * 1000
    return result


def measure(args: argparse.Namespace) -> dict[str, Any]:
    model = DiaConfig() if args.size == "real" else DiaConfig.tiny()
    dac = DacConfig() if args.size == "real" else DacConfig.tiny()
    bandwidth = memory_bandwidth_gbs(device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "max_streams": max(args.batches),
            "max_rows": args.steps + 64,
            "max_text_bytes": 512,
            "device": args.device,
        }
        directory = write_dia_voice(Path(tmp) / "dia", model, dac, seed=0, eos_scale=0.0, voice=settings)
        tiny = write_dia_voice(Path(tmp) / "tiny", DiaConfig.tiny(), DacConfig.tiny(), seed=0, voice=settings)
        ours: list[dict[str, Any]] = []
        prefill: list[dict[str, Any]] = []
        parameters = 0
        for dtype in args.dtypes:
            for mode in args.modes:
                # A fixed-shape step steps every cache row: its cache holds exactly the batch.
                loads = [None] if mode == "variable" else args.batches
                for streams in loads:
                    spec = {**settings, "dtype": dtype, "step": mode}
                    if streams is not None:
                        spec["max_streams"] = streams
                    (directory / "voice.json").write_text(json.dumps(spec))
                    voice = DiaVoice.load(directory)
                    parameters = sum(p.numel() for p in voice.network.parameters())
                    for batch in args.batches if streams is None else [streams]:
                        row = _steps(voice, batch, args.steps, bandwidth * 1e9)
                        ours.append({"dtype": dtype, "mode": mode, **row})
                    if dtype == "float32" and mode == "variable":
                        prefill = _prefill_by_length(voice, [32, 128, 512])
                    del voice
                    gc.collect()
        reference = None
        if args.reference:
            reference = _reference(Path(args.reference), directory, speaker_text_ids(_TEXT), 2, 2 + args.steps)
        first_steps = first_audio_steps(tiny)
    chunks = DiaVoiceConfig().chunks
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
        + (f", {torch.cuda.get_device_name(args.device)}" if torch.device(args.device).type == "cuda" else ""),
        "size": args.size,
        "device": args.device,
        "parameters": parameters,
        "bandwidth_gbs": bandwidth,
        "steps_timed": args.steps,
        "ours": ours,
        "reference": reference,
        "encoder_prefill": prefill,
        "dac": _dac_windows(dac, chunks.first, chunks.cap, chunks.lookahead, args.device),
        "first_audio_after_steps": first_steps,
    }
    one = next((r for r in ours if r["batch"] == 1 and r["dtype"] == "float32" and r["mode"] == "variable"), None)
    for row in ours:
        same = next(
            (r for r in ours if r["batch"] == 1 and (r["dtype"], r["mode"]) == (row["dtype"], row["mode"])), None
        )
        if same is not None:
            row["throughput_vs_batch1"] = row["batch"] * same["step_ms"] / row["step_ms"]
    if one is not None:
        if reference:
            result["speedup_vs_reference_batch1_fp32"] = reference["step_ms"] / one["step_ms"]
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench dia — {result['date']}, {result['machine']}; {result['size']}-size random weights"
        f" on {result['device']}; memory bandwidth {result['bandwidth_gbs']:.1f} GB/s",
        "  weights   step                 batch  ms/step  bound ms  ratio  steps/s per request  x batch 1",
    ]
    for r in result["ours"]:
        lines.append(
            f"  {r['dtype']:<9} {r['mode']:<20} {r['batch']:>6} {r['step_ms']:>8.1f} {r['bound_ms']:>9.1f}"
            f" {r['ratio_to_bound']:>6.2f}"
            f" {r['steps_per_s_per_request']:>20.2f} {r.get('throughput_vs_batch1', float('nan')):>10.2f}"
        )
    ref = result["reference"]
    if ref:
        lines.append(f"  transformers generate (fp32, batch 1): {ref['step_ms']:.1f} ms/step")
        lines.append(
            f"  transformers ms/step / streamvox fp32 batch 1 ms/step: {result['speedup_vs_reference_batch1_fp32']:.2f}"
        )
    for row in result["encoder_prefill"]:
        lines.append(f"  encoder prefill, {row['text_bytes']:>4} bytes (2 rows): {row['encoder_ms']:.1f} ms")
    for row in result["dac"]:
        lines.append(
            f"  DAC {row['window']} window: {row['frames_decoded']} frames decoded, {row['frames_kept']} kept,"
            f" {row['ms']:.1f} ms (RTF {row['rtf']:.3f})"
        )
    lines.append(f"  first audio decodable after {result['first_audio_after_steps']} decoder steps")
    return "\n".join(lines)


def run_dia_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(json.dumps(result) if args.json else _table(result))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0

"""``streamvox bench ar``: GPT-SoVITS T2S decode speed, ours against the reference, in one run.

Both run the v2 dimensions (24 layers, width 512, 16 heads) with the same
random weights, written once as a real-format s1 checkpoint, on the same
prompt (``--text-len`` phoneme ids, ``--prompt-len`` semantic tokens).  Ours
decodes ``--tokens`` steps at batch 1, 4 and 16 (one slot per stream, all in
one batched step), with fp32 weights, with int8 linear weights, and with int8
weights over a bfloat16 key/value cache (``bf16_cache``) and over an int8 one
(``int8_cache``, a float32 scale per row); the
reference (``gpt-sovits-cpufast``'s ``infer_panel``, in a child process with
``--reference`` on its path) decodes the same number of tokens at batch 1.
The end-of-speech row of the output head is zero, far below the top 15
logits, so every run decodes ``--tokens`` tokens.
What the cheaper paths (int8, a bf16 cache, both) do to the logits is
measured teacher-forced against fp32 weights and cache (:func:`cache_rounding`).

Each batch row is also set against the hardware, measured in the same run:
the memory read bandwidth and the linear layers' multiply-add rate (fp32, and
int8 through fbgemm).  A step's floor is the larger of the bytes it must read
(weights, and every slot's cached keys and values at the step's mean width)
over the bandwidth and its multiply-adds over that rate; the row reports ms per
step, the floor, which of the two sets it, and their ratio.  From the floor it
derives a ceiling: the throughput with every step at its floor and the
prefills as measured (they are compute-bound, one per stream), against batch 1
as measured.  Where that ceiling is below a target, no step code reaches it.

Streaming (batch 1, fp32 and int8 T2S): random v2-size SoVITS weights are
written as a real-format s2 file; one utterance of ``--tokens`` tokens is
generated and vocoded chunk by chunk (:class:`ChunkSchedule` defaults) the way
a session will be served, T2S and vocoder taking turns on one thread; one more
int8 + bf16 row starts fast (``--fast-start``: a first chunk of 8 tokens
decoded once 2 more exist, instead of 12 after 4).  It
reports the first-chunk latency (prefill start to the first audio chunk, the
speaker vector precomputed and the window sizes warmed up as a loaded voice
has them) split into prefill, T2S steps and the vocoder; the RTF (all compute /
audio length) split into T2S and vocoder; how many tokens the vocoder decoded
per token of audio (the re-decoded left context and bucket stretching); the
playback stall a listener starting at the first chunk hears; the vocoder's own
one-shot RTF (warm); and the streamed audio's SNR against the one-shot decode
of the same tokens, over all of it and over its first 0.4 s, where a smaller
first chunk decoded with less context shows (random weights attend more
diffusely than trained ones, so this is a floor, not the figure a real voice
gets).  With ``--reference``
the reference pipeline runs beside it on the same weights: ``infer_panel``,
then SoVITS's one-shot ``decode`` (its first audio is all of it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from streamvox.bench.hardware import matmul_gmacs, memory_bandwidth_gbs
from streamvox.bench.harness import playback_stall_ms, snr_db
from streamvox.bench.random_voice import write_sovits_checkpoint, write_t2s_checkpoint
from streamvox.engine.ar.token_vocoder import ChunkSchedule
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig

KV_CACHES: dict[str, torch.dtype | None] = {"": None, "+bf16kv": torch.bfloat16, "+int8kv": torch.int8}
"""The T2S cache types the benchmark runs, by the suffix they add to a row's weights label."""

BATCHED_PATHS: tuple[tuple[bool, str], ...] = ((False, ""), (True, ""), (True, "+bf16kv"), (True, "+int8kv"))
"""The batched rows' paths: int8 weights or not, and a :data:`KV_CACHES` suffix."""


def path_label(int8: bool, cache: str) -> str:
    """A batched row's ``weights`` label: ``fp32`` or ``int8``, then its cache's suffix."""
    return ("int8" if int8 else "fp32") + cache


FIRST_SNR_S = 0.4
"""The opening (seconds) whose streamed audio is also set against the one-shot decode on its own:
what a smaller first chunk, decoded with less context, changes."""

_REFERENCE_RUN = """
import io, json, sys, time, torch
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
codes = y[:, prompt.shape[1]:]
result = {"tokens": int(codes.shape[1]), "seconds": elapsed}
if job.get("s2"):
    from module.mel_processing import spectrogram_torch
    from module.models import SynthesizerTrn
    with open(job["s2"], "rb") as f:
        data = f.read()
    s2 = torch.load(io.BytesIO(b"PK" + data[2:]), map_location="cpu", weights_only=True)
    hps = s2["config"]
    d = hps["data"]
    segment = hps["train"]["segment_size"] // d["hop_length"]
    sovits = SynthesizerTrn(d["filter_length"] // 2 + 1, segment, n_speakers=d["n_speakers"], **hps["model"]).eval()
    sovits.load_state_dict({k: v.float() for k, v in s2["weight"].items()}, strict=False)
    rate = d["sampling_rate"]
    t = torch.arange(3 * rate) / rate
    refer = spectrogram_torch(0.3 * torch.sin(2 * torch.pi * 150 * t)[None], d["filter_length"], rate,
                              d["hop_length"], d["win_length"])
    text = x  # the target text is the prompt text here, as in our streaming run
    with torch.no_grad():
        sovits.decode(codes[None], text, refer)  # this length's one-off setup, as ours is warm
        started = time.perf_counter()
        audio = sovits.decode(codes[None], text, refer, noise_scale=0.5)
        result["sovits_seconds"] = time.perf_counter() - started
    result["audio_seconds"] = audio.shape[-1] / rate
print(json.dumps(result))
"""


def kv_bytes_per_value(cfg: T2SConfig, cache: torch.dtype | None) -> float:
    """Bytes a T2S cache spends per cached key or value element: 4 in fp32 (``None``), 2 in bf16, 1
    in int8 plus its row's float32 scale shared over the head's dimensions."""
    if cache == torch.int8:
        return 1 + 4 / (cfg.hidden // cfg.heads)
    return 2 if cache == torch.bfloat16 else 4


def t2s_step_bytes(cfg: T2SConfig, int8: bool, batch: int, width: float, cache_bytes: float = 4) -> float:
    """What one batched T2S step must read from memory: every transformer linear's weights
    (1 byte each in int8, 4 in fp32, plus fp32 biases), the fp32 output head, and each of the
    ``batch`` slots' cached keys and values over ``width`` positions in every layer
    (``cache_bytes`` each: see :func:`kv_bytes_per_value`).  Norms and the one embedding row per slot
    are left out (under 0.1 % of it)."""
    h, f = cfg.hidden, cfg.ffn
    linear_weights = cfg.layers * (3 * h * h + h * h + 2 * h * f)
    biases = cfg.layers * (3 * h + h + f + h)
    weights = linear_weights * (1 if int8 else 4) + 4 * biases + 4 * cfg.vocab * h
    cache = 2 * cfg.layers * batch * width * h * cache_bytes
    return weights + cache


def t2s_step_macs(cfg: T2SConfig, batch: int, width: float) -> float:
    """Multiply-adds of one batched T2S step: each slot through every linear and the head, and its
    attention (scores and weighted values) over ``width`` cached positions in every layer."""
    h, f = cfg.hidden, cfg.ffn
    per_slot = cfg.layers * (3 * h * h + h * h + 2 * h * f + 2 * width * h) + cfg.vocab * h
    return batch * per_slot


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the lower middle of an even count), with every run's
    tokens/s beside it (``tokens_per_s_runs``), so a ratio is not one run's luck."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["tokens_per_s_runs"] = [r["tokens_per_s"] for r in runs]
    return chosen


def _ours(
    checkpoint: Path,
    batch: int,
    phonemes: list[int],
    prompt: list[int],
    tokens: int,
    int8: bool,
    bandwidth: float,
    macs_per_s: float,
    cache: str = "",
) -> dict[str, Any]:
    """``batch`` streams prefilled one by one, then decoded ``tokens`` steps together.  A step's
    floor is the larger of its bytes over ``bandwidth`` (bytes/s) and its multiply-adds over
    ``macs_per_s`` (the linear layers' rate at these weights).  ``cache``: a :data:`KV_CACHES`
    suffix, the type keys and values are cached in."""
    from streamvox.engine.ar.generate import TokenStream, advance, choose_all
    from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
    from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
    from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder

    loaded = load_s1(checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    max_len = len(phonemes) + len(prompt) + tokens + 8
    cache_dtype = KV_CACHES[cache]
    decoder = T2SDecoder(loaded.weights, cfg, slots=batch, max_len=max_len, int8=int8, cache_dtype=cache_dtype)
    policy = EosPolicy(eos=cfg.eos, max_steps=tokens)
    started = time.perf_counter()
    streams = []
    for slot in range(batch):
        first = decoder.prefill(slot, torch.tensor(phonemes), torch.tensor(prompt))
        streams.append(TokenStream.start(slot, first, torch.tensor(prompt), SamplingParams(), seed=slot))
    prefilled = time.perf_counter()
    steps = 0
    while not all(s.done for s in streams):
        advance(decoder, streams, choose_all(streams, [policy] * len(streams)))
        steps += 1
    finished = time.perf_counter()
    produced = sum(len(s.tokens) for s in streams)
    # The step reads the cache up to its longest slot; on average that is half-way through.
    mean_width = len(phonemes) + len(prompt) + (steps + 1) / 2
    memory_s = t2s_step_bytes(cfg, int8, batch, mean_width, kv_bytes_per_value(cfg, cache_dtype)) / bandwidth
    compute_s = t2s_step_macs(cfg, batch, mean_width) / macs_per_s
    bound_s = max(memory_s, compute_s)
    step_s = (finished - prefilled) / steps
    prefill_s = prefilled - started
    return {
        "weights": path_label(int8, cache),
        "batch": batch,
        "tokens": produced,
        "steps": steps,
        "prefill_s": prefill_s,
        "decode_s": finished - prefilled,
        "tokens_per_s": produced / (finished - started),
        "decode_tokens_per_s": produced / (finished - prefilled),
        "step_ms": 1000 * step_s,
        "bound_ms": 1000 * bound_s,
        "bound_by": "memory" if memory_s >= compute_s else "compute",
        "ratio_to_bound": step_s / bound_s,
        "ceiling_tokens_per_s": produced / (prefill_s + steps * bound_s),
    }


def cache_rounding(checkpoint: Path, phonemes: list[int], prompt: list[int], tokens: int) -> list[dict[str, Any]]:
    """What a cheaper T2S path does to the logits, teacher-forced: fp32 weights and cache step the
    greedy tokens of their own logits for ``tokens`` steps at batch 1, and every other path steps
    the same tokens.  Per path: the largest logit difference, how often its top token is fp32's,
    and the mean KL divergence of its next-token distribution from fp32's (temperature 1).  Random
    weights give flat distributions, so this is what the rounding does to the arithmetic, not a
    listening test."""
    from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
    from streamvox.engine.backends.gpt_sovits.t2s import T2SDecoder

    loaded = load_s1(checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    max_len = len(phonemes) + len(prompt) + tokens + 8
    paths = {
        weights + cache: (weights == "int8", dtype)
        for weights in ("fp32", "int8")
        for cache, dtype in KV_CACHES.items()
    }
    decoders = {
        name: T2SDecoder(loaded.weights, cfg, slots=1, max_len=max_len, int8=int8, cache_dtype=cache)
        for name, (int8, cache) in paths.items()
    }
    logits = {name: [d.prefill(0, torch.tensor(phonemes), torch.tensor(prompt))] for name, d in decoders.items()}
    slot = torch.tensor([0])
    for _ in range(tokens):
        token = logits["fp32"][-1][: cfg.eos].argmax().view(1)
        for name, decoder in decoders.items():
            logits[name].append(decoder.step(slot, token)[0])
    exact = torch.stack(logits["fp32"]).double()  # float64: a KL this small drowns in float32 rounding
    rows = []
    for name in paths:
        if name == "fp32":
            continue
        other = torch.stack(logits[name]).double()
        kl = torch.nn.functional.kl_div(other.log_softmax(-1), exact.log_softmax(-1), log_target=True, reduction="none")
        rows.append(
            {
                "path": name,
                "max_logit_diff": float((other - exact).abs().max()),
                "top1_agreement": float((other.argmax(-1) == exact.argmax(-1)).float().mean()),
                "mean_kl": max(0.0, float(kl.sum(-1).mean())),
            }
        )
    return rows


class _CountingDecoder:
    """An utterance's SoVITS decoder that counts the tokens of its windows (context included:
    the content encoder and the flow run over them) and those HiFi-GAN runs over."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.tokens_decoded = 0
        self.tokens_vocoded = 0

    @property
    def samples_per_token(self) -> int:
        return int(self.inner.samples_per_token)

    def decode(self, tokens: Any, first_token: int, keep_from: int = 0) -> Any:
        self.tokens_decoded += len(tokens)
        self.tokens_vocoded += len(tokens) - self.inner.sovits.config.vocoder_start(len(tokens), keep_from)
        return self.inner.decode(tokens, first_token, keep_from)


def streaming_run(
    t2s_checkpoint: Path,
    s2_checkpoint: Path,
    phonemes: list[int],
    prompt: list[int],
    tokens: int,
    int8: bool,
    bf16_vocoder: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    step: str = "variable",
    schedule: ChunkSchedule | None = None,
) -> dict[str, Any]:
    """One utterance generated and vocoded chunk by chunk at batch 1, on ``device`` with T2S in
    ``dtype`` and its ``step`` (``variable`` or a :data:`~streamvox.engine.ar.fixed_step.MODES`
    mode), with ``schedule`` (default: :class:`ChunkSchedule`'s).  Every step reads its logits
    back to the host and every chunk its audio, so the clock sees the device's work without extra
    synchronisation."""
    import numpy as np
    from streamvox.engine.ar.fixed_step import FixedShapeStep
    from streamvox.engine.ar.generate import TokenModel, TokenStream, advance, choose
    from streamvox.engine.ar.sampler import EosPolicy, SamplingParams
    from streamvox.engine.ar.token_vocoder import StreamingVocoder
    from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
    from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder
    from streamvox.engine.backends.gpt_sovits.vits import SoVITSDecoder, UtteranceDecoder, warm_up_lengths

    loaded = load_s1(t2s_checkpoint)
    cfg = T2SConfig.from_checkpoint(loaded.config)
    max_len = len(phonemes) + len(prompt) + tokens + 8
    t2s = T2SDecoder(loaded.weights, cfg, slots=1, max_len=max_len, int8=int8, device=device, dtype=dtype)
    stepper: TokenModel = t2s if step == "variable" else FixedShapeStep(t2s, step)
    sovits = SoVITSDecoder.load(s2_checkpoint, bf16_vocoder=bf16_vocoder, device=device)
    rate = sovits.config.sampling_rate
    t = np.arange(3 * rate) / rate
    speaker = sovits.speaker(sovits.reference_spectrogram((0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)))
    schedule = schedule or ChunkSchedule()
    target = torch.tensor(phonemes)
    counting = _CountingDecoder(UtteranceDecoder(sovits, target.reshape(1, -1), speaker, 0.5, 0))
    vocoder = StreamingVocoder(counting, schedule)
    policy = EosPolicy(eos=cfg.eos, max_steps=tokens)
    # Warm-up, as a served voice is warm: first calls allocate and pick kernels.
    warm = TokenStream.start(0, t2s.prefill(0, target, torch.tensor(prompt)), torch.tensor(prompt), SamplingParams(), 0)
    for _ in range(3):  # a compiled step compiles here
        advance(stepper, [warm], [choose(warm, policy)])
    t2s.release(0)
    for window in warm_up_lengths(schedule.window_sizes()):  # what a loaded voice's warm_up does
        sovits.decode([0] * window, target, speaker)
    chunks: list[tuple[float, int]] = []
    t2s_s = vocoder_s = 0.0
    first_vocoder_s = first_t2s_s = 0.0
    started = time.perf_counter()
    first = t2s.prefill(0, target, torch.tensor(prompt))
    stream = TokenStream.start(0, first, torch.tensor(prompt), SamplingParams(), seed=0)
    prefill_s = time.perf_counter() - started
    pieces = []
    while not stream.done:
        step_started = time.perf_counter()
        token = choose(stream, policy)
        advance(stepper, [stream], [token])
        t2s_s += time.perf_counter() - step_started
        if token is not None:
            vocoder.add([token])
        while vocoder.pending():
            decode_started = time.perf_counter()
            pieces.append(vocoder.decode())
            now = time.perf_counter()
            vocoder_s += now - decode_started
            if not chunks:
                first_t2s_s, first_vocoder_s = decode_started - started, now - decode_started
            chunks.append((now - started, len(pieces[-1])))
    decode_started = time.perf_counter()
    pieces.append(vocoder.finish())
    elapsed = time.perf_counter() - started
    vocoder_s += started + elapsed - decode_started
    if not chunks:  # an utterance shorter than the first chunk: its only audio comes at the end
        first_t2s_s, first_vocoder_s = decode_started - started, started + elapsed - decode_started
    chunks.append((elapsed, len(pieces[-1])))
    streamed = np.concatenate(pieces)
    audio_s = len(streamed) / rate
    sovits.decode(stream.tokens, target, speaker, seed=0)  # this length's one-off setup, untimed
    one_shot_started = time.perf_counter()
    offline = sovits.decode(stream.tokens, target, speaker, seed=0).numpy()
    one_shot_s = time.perf_counter() - one_shot_started
    opening = int(FIRST_SNR_S * rate)
    weights = "int8" if int8 else {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype))
    return {
        "weights": weights + (" + bf16 vocoder" if bf16_vocoder else ""),
        "device": device,
        "step": step,
        "tokens": len(stream.tokens),
        "audio_s": audio_s,
        "first_chunk_ms": 1000 * chunks[0][0],
        "first_chunk_audio_ms": 1000 * chunks[0][1] / rate,
        "chunks": len(chunks),
        "first_chunk_prefill_ms": 1000 * (prefill_s),
        "first_chunk_t2s_ms": 1000 * first_t2s_s,
        "first_chunk_vocoder_ms": 1000 * first_vocoder_s,
        "rtf": elapsed / audio_s,
        "t2s_rtf": (prefill_s + t2s_s) / audio_s,
        "vocoder_rtf": vocoder_s / audio_s,
        "tokens_decoded_per_token": counting.tokens_decoded / len(stream.tokens),
        "tokens_vocoded_per_token": counting.tokens_vocoded / len(stream.tokens),
        "stall_ms": playback_stall_ms(chunks, rate),
        "vocoder_one_shot_rtf": one_shot_s / audio_s,
        "streamed_vs_one_shot_snr_db": _finite_snr_db(offline, streamed),
        "opening_vs_one_shot_snr_db": _finite_snr_db(offline[:opening], streamed[:opening]),
        "schedule": {
            "first": schedule.first,
            "cap": schedule.cap,
            "lookahead": schedule.lookahead,
            "first_lookahead": schedule.lookahead_after(schedule.first),
            "left_context": schedule.left_context,
            "overlap": schedule.overlap,
        },
    }


def _finite_snr_db(reference: Any, audio: Any) -> float | None:
    """:func:`~streamvox.bench.harness.snr_db`, ``None`` where the two are equal (JSON has no infinity)."""
    snr = snr_db(reference, audio)
    return None if math.isinf(snr) else snr


def _reference(reference: Path, checkpoint: Path, s2: Path, phonemes: list[int], prompt: list[int], tokens: int) -> Any:
    """The reference pipeline in a child process: ``infer_panel`` for ``tokens`` tokens, then
    ``SynthesizerTrn.decode`` of them in one shot (it has no streaming of its own at this API), so
    its first audio is all of it."""
    job = {
        "checkpoint": str(checkpoint),
        "s2": str(s2),
        "phonemes": phonemes,
        "prompt": prompt,
        "tokens": tokens,
    }
    env = dict(os.environ, PYTHONPATH=f"{reference / 'GPT_SoVITS'}{os.pathsep}{reference}")
    threads = str(torch.get_num_threads())
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE_RUN, json.dumps(job), threads], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"reference run failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["first_audio_ms"] = 1000 * (result["seconds"] + result["sovits_seconds"])
    result["rtf"] = (result["seconds"] + result["sovits_seconds"]) / result["audio_seconds"]
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
            reference = _reference(Path(args.reference), checkpoint, s2, phonemes, prompt, args.tokens)
        bandwidth = memory_bandwidth_gbs()
        gmacs = {int8: matmul_gmacs(int8) for int8 in (False, True)}
        ours = []
        for int8, cache in BATCHED_PATHS:
            runs: dict[int, list[dict[str, Any]]] = {b: [] for b in args.batches}
            rates = (bandwidth * 1e9, gmacs[int8] * 1e9)
            for _ in range(args.repeats):  # the batch sizes alternate, so drift hits each alike
                for b in args.batches:
                    runs[b].append(_ours(checkpoint, b, phonemes, prompt, args.tokens, int8, *rates, cache))
            ours.extend(median_run(runs[b]) for b in args.batches)
        rounding = cache_rounding(checkpoint, phonemes, prompt, args.tokens)
        streaming = [
            streaming_run(checkpoint, s2, phonemes, prompt, args.tokens, int8, bf16)
            for int8, bf16 in ((False, False), (True, False), (True, True))
        ]
        first, first_lookahead = args.fast_start
        fast = ChunkSchedule(first=first, first_lookahead=first_lookahead)
        streaming.append(streaming_run(checkpoint, s2, phonemes, prompt, args.tokens, True, True, schedule=fast))
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "tokens_per_stream": args.tokens,
        "repeats": args.repeats,
        "text_len": args.text_len,
        "prompt_len": args.prompt_len,
        "bandwidth_gbs": bandwidth,
        "matmul_gmacs_fp32": gmacs[False],
        "matmul_gmacs_int8": gmacs[True],
        "ours": ours,
        "rounding_vs_fp32": rounding,
        "reference": reference,
        "streaming": streaming,
    }
    for kind in (path_label(*path) for path in BATCHED_PATHS):
        rows = [r for r in ours if r["weights"] == kind]
        one = next((r for r in rows if r["batch"] == 1), None)
        if one is None:
            continue
        for row in rows:
            row["throughput_vs_batch1"] = row["tokens_per_s"] / one["tokens_per_s"]
            row["decode_vs_batch1"] = row["decode_tokens_per_s"] / one["decode_tokens_per_s"]
            # The most batching could give against the batch-1 measured here, were every step at its
            # bandwidth floor: the prefills stay (compute-bound, one per stream).
            row["ceiling_vs_batch1"] = row["ceiling_tokens_per_s"] / one["tokens_per_s"]
        if reference:
            result[f"speedup_vs_reference_batch1_{kind}"] = one["tokens_per_s"] / reference["tokens_per_s"]
    return result


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench ar — {result['date']}, {result['machine']}; GPT-SoVITS v2 T2S, random weights, "
        f"{result['tokens_per_stream']} tokens per stream, text {result['text_len']} + prompt {result['prompt_len']}, "
        f"each batch size's median of {result['repeats']} alternating runs; "
        f"memory bandwidth {result['bandwidth_gbs']:.1f} GB/s, linear layers {result['matmul_gmacs_fp32']:.0f} GMAC/s"
        f" fp32, {result['matmul_gmacs_int8']:.0f} int8",
        "  system             batch  tokens/s (incl. prefill)  x batch 1  decode x batch 1"
        "  ms/step  bound ms (by)  ratio  ceiling x batch 1",
    ]
    for r in result["ours"]:
        lines.append(
            f"  streamvox {r['weights']:<11} {r['batch']:>2} {r['tokens_per_s']:>25.1f}"
            f" {r.get('throughput_vs_batch1', float('nan')):>10.2f} {r.get('decode_vs_batch1', float('nan')):>17.2f}"
            f" {r['step_ms']:>8.1f} {r['bound_ms']:>6.1f} {r['bound_by'][:3]} {r['ratio_to_bound']:>6.2f}"
            f" {r.get('ceiling_vs_batch1', float('nan')):>18.2f}"
        )
    ref = result["reference"]
    if ref:
        lines.append(f"  gpt-sovits-cpufast     1 {ref['tokens_per_s']:>25.1f}")
    for kind in (path_label(*path) for path in BATCHED_PATHS):
        if f"speedup_vs_reference_batch1_{kind}" in result:
            ratio = result[f"speedup_vs_reference_batch1_{kind}"]
            lines.append(f"  batch 1, streamvox {kind} / reference (fp32): {ratio:.2f}x")
    lines.append("  teacher-forced against fp32 weights and cache:  largest logit diff  top-1 agreement  mean KL")
    for r in result["rounding_vs_fp32"]:
        lines.append(
            f"  streamvox {r['path']:<12} {r['max_logit_diff']:>36.2e} {100 * r['top1_agreement']:>15.1f} %"
            f" {r['mean_kl']:>9.2e}"
        )
    lines.append(
        "  streaming, batch 1 (T2S + SoVITS chunks)              first chunk = prefill + T2S + vocoder  its audio   RTF"
        " = T2S + vocoder  decoded/token (HiFi-GAN)  stall  one-shot voc RTF  SNR vs one-shot (first 0.4 s)"
    )
    for r in result["streaming"]:
        snr, opening = r["streamed_vs_one_shot_snr_db"], r["opening_vs_one_shot_snr_db"]
        chunks = r["schedule"]
        label = r["weights"] + (
            f", first {chunks['first']} + {chunks['first_lookahead']}"
            if (chunks["first"], chunks["first_lookahead"]) != (ChunkSchedule.first, ChunkSchedule.lookahead)
            else ""
        )
        lines.append(
            f"  streamvox {label:<32} {r['first_chunk_ms']:>8.0f} ms = {r['first_chunk_prefill_ms']:>4.0f}"
            f" + {r['first_chunk_t2s_ms'] - r['first_chunk_prefill_ms']:>4.0f} + {r['first_chunk_vocoder_ms']:>4.0f}"
            f" {r['first_chunk_audio_ms']:>9.0f} ms {r['rtf']:>6.3f} = {r['t2s_rtf']:.3f} + {r['vocoder_rtf']:.3f}"
            f" {r['tokens_decoded_per_token']:>11.2f} ({r['tokens_vocoded_per_token']:.2f})"
            f" {r['stall_ms']:>5.0f} ms {r['vocoder_one_shot_rtf']:>12.3f}"
            f" {'' if snr is None else f'{snr:.1f} dB':>16} ({'' if opening is None else f'{opening:.1f} dB'})"
        )
    if ref:
        lines.append(
            f"  gpt-sovits-cpufast, one shot (T2S, then SoVITS)  first audio {ref['first_audio_ms']:.0f} ms"
            f" = {1000 * ref['seconds']:.0f} + {1000 * ref['sovits_seconds']:.0f}, RTF {ref['rtf']:.3f}"
        )
    return "\n".join(lines)


def run_ar_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    result = measure(args)
    print(json.dumps(result) if args.json else _table(result))
    return 0

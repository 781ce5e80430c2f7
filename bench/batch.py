"""``streamvox bench batch``: does stacking several streams' windows into one decoder call pay?

For each window size (latent frames, with the engine's context frames added)
and each batch size ``b`` from 1 to 8 it times three ways of decoding ``b``
windows, side by side in one run, on the bundled voice's HiFi-GAN decoder:

* ``batched, 1 thread``: one call on a ``(b, channels, frames)`` tensor, one intra-op thread;
* ``batched, all cores``: the same call with one intra-op thread per core;
* ``parallel, 1 thread each``: ``b`` separate calls spread over one worker thread per core
  (what the engine does).

It prints audio seconds decoded per wall second for each (higher is better) and
which way wins at each size.  Batching needs windows of exactly equal shape
(padding would change a stream's audio), so it could only ever apply to the
windows that happen to line up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

WAYS = ("batched_1_thread", "batched_all_cores", "parallel_1_thread_each")


def _decoders() -> tuple[int, int, Any, Any]:
    """The bundled voice's sample rate, latent channels, and its decoder with 1 and all-core threads."""
    import onnxruntime as ort
    from streamvox.engine.backends.piper.backend import bundled_voice_path
    from streamvox.engine.backends.piper.graph import split_piper_graph
    from streamvox.engine.backends.piper.voice import PiperVoiceConfig, _session_options

    model = bundled_voice_path()
    rate = PiperVoiceConfig.from_json(model.with_name(model.name + ".json")).sample_rate
    split = split_piper_graph(model.read_bytes())
    lean, fast = (
        ort.InferenceSession(split.decoder, _session_options(threads), ["CPUExecutionProvider"]) for threads in (1, 0)
    )
    return rate, split.z_channels, lean, fast


def measure(window_frames: list[int], batches: list[int], repeats: int) -> dict[str, Any]:
    from streamvox.engine.audio.windows import WindowPlan
    from streamvox.engine.backends.piper.graph import Z_OUTPUT
    from streamvox.engine.backends.piper.voice import HOP_LENGTH

    cores = os.cpu_count() or 1
    rate, channels, lean, fast = _decoders()
    context = WindowPlan().context_frames
    rng = np.random.default_rng(0)
    rows = []
    with ThreadPoolExecutor(cores) as pool:
        for frames in window_frames:
            padded = frames + 2 * context
            for b in batches:
                z = rng.standard_normal((b, channels, padded), dtype=np.float32)
                singles = [np.ascontiguousarray(z[i : i + 1]) for i in range(b)]
                ways = {
                    "batched_1_thread": lambda z=z: lean.run(None, {Z_OUTPUT: z}),
                    "batched_all_cores": lambda z=z: fast.run(None, {Z_OUTPUT: z}),
                    "parallel_1_thread_each": lambda singles=singles: list(
                        pool.map(lambda x: lean.run(None, {Z_OUTPUT: x}), singles)
                    ),
                }
                best: dict[str, float] = {}
                for fn in ways.values():
                    fn()  # warm-up: first-run allocations
                for _ in range(repeats):  # interleaved, so drift on a shared machine hits all ways alike
                    for name, fn in ways.items():
                        started = time.perf_counter()
                        fn()
                        elapsed = time.perf_counter() - started
                        best[name] = min(best.get(name, float("inf")), elapsed)
                audio_s = b * frames * HOP_LENGTH / rate
                row = {"window_frames": frames, "batch": b}
                row.update({name: round(audio_s / best[name], 2) for name in WAYS})
                row["winner"] = max(WAYS, key=lambda name: row[name])
                rows.append(row)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {cores} cores",
        "unit": "audio seconds decoded per wall second (best of the repeats)",
        "context_frames": context,
        "rows": rows,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"streamvox bench batch — {result['date']}, {result['machine']}; {result['unit']}; "
        f"each window carries {result['context_frames']} context frames per side",
        "  window  batch  batched 1 thread  batched all cores  parallel 1 thread each  winner",
    ]
    for r in result["rows"]:
        lines.append(
            f"  {r['window_frames']:>6} {r['batch']:>6} {r['batched_1_thread']:>17.2f} {r['batched_all_cores']:>18.2f}"
            f" {r['parallel_1_thread_each']:>23.2f}  {r['winner']}"
        )
    return "\n".join(lines)


def run_batch_bench(args: argparse.Namespace) -> int:
    result = measure(args.windows, args.batches, args.repeats)
    print(json.dumps(result) if args.json else _table(result))
    return 0

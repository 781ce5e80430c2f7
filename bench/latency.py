"""``streamvox bench latency``: server TTFA against piper-tts, RTF and overhead, measured in one run.

The server runs as a child process (so its CPU time is its own), and the
same three-sentence paragraph is spoken by it and by ``piper-tts`` on the
same voice, runs interleaved so both see the same machine conditions.

* Server TTFA: from the moment the paragraph becomes speakable (the
  ``flush``) to the first Opus packet written (the server's ``done.ttfa_ms``);
  the client-observed figure is printed beside it.
* piper-tts: time from ``synthesize()`` to its first audio chunk.
* Overhead ratio: server CPU seconds per audio second divided by the raw
  ONNX model's CPU seconds per audio second on the same text (one-shot,
  sentence by sentence as Piper runs it), with onnxruntime's default
  threading (what piper-tts does) and, beside it, single-threaded.  A third
  floor runs the same graph single-threaded with its convolutions rewritten
  as the server runs them (height-one 2-D convolutions, upsampling in phases),
  so the ratio to it is the server's own overhead, not the kernels it chose.
  The server's own split by thread role (``/metrics``) says where the rest
  goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from streamvox.bench.harness import percentile, process_cpu_s, start_server
from streamvox.bench.load import cpu_by_role, server_counters

PARAGRAPH = (
    "The storm rolled in just after midnight, rattling the windows of the old farmhouse. "
    "By morning the river had risen over its banks, and the road to town was under water. "
    "Still, the neighbours gathered on the porch with coffee, trading stories until the sun came out."
)
LLM_WORDS_PER_S = 20.0


@dataclass
class ServerRun:
    ttfa_server_ms: float
    ttfa_client_ms: float
    audio_s: float
    rtf: float


async def _server_utterance(url: str, text: str) -> ServerRun:
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "text", "text": text}))
        flushed = time.perf_counter()
        await ws.send(json.dumps({"type": "end"}))
        first: float | None = None
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                first = first or time.perf_counter()
                continue
            event = json.loads(message)
            if event["type"] == "done":
                return ServerRun(event["ttfa_ms"], (first - flushed) * 1000, event["seconds"], event["rtf"])
            if event["type"] == "error":
                raise RuntimeError(f"server error: {event}")


async def _llm_paced_ttfa(url: str, text: str) -> float:
    """End to end: first text message to first audio, words sent at LLM pace."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        first_audio = asyncio.get_running_loop().create_future()

        async def reader() -> None:
            while True:
                message = await ws.recv()
                if isinstance(message, bytes) and not first_audio.done():
                    first_audio.set_result(time.perf_counter())
                elif isinstance(message, str) and json.loads(message)["type"] == "done":
                    return

        task = asyncio.create_task(reader())
        started = time.perf_counter()
        for word in text.split(" "):
            await ws.send(json.dumps({"type": "text", "text": word + " "}))
            await asyncio.sleep(1 / LLM_WORDS_PER_S)
        await ws.send(json.dumps({"type": "end"}))
        await task
        return (first_audio.result() - started) * 1000


class RawOnnx:
    """The Piper ONNX graph run one-shot per sentence, as Piper runs it: the floor.

    ``lifted`` runs the same graph with its convolutions rewritten as the server runs them
    (``graph.lift_piper_graph``: height-one 2-D convolutions, the upsampling in phases);
    unlifted it is the unmodified export.
    """

    def __init__(self, text: str, threads: int, lifted: bool = False) -> None:
        import onnxruntime as ort
        from streamvox.engine.backends.piper.backend import bundled_voice_path
        from streamvox.engine.backends.piper.graph import lift_piper_graph
        from streamvox.engine.backends.piper.voice import PiperVoiceConfig
        from streamvox.engine.text.phonemes import phoneme_ids, phonemize

        model = bundled_voice_path()
        config = PiperVoiceConfig.from_json(model.with_name(model.name + ".json"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        graph = model.read_bytes()
        if lifted:
            graph = lift_piper_graph(graph)
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.sample_rate = config.sample_rate
        self.scales = np.array([config.noise_scale, config.length_scale, config.noise_w], dtype=np.float32)
        self.sentences = [phoneme_ids(s, config.phoneme_id_map) for s in phonemize(text, config.espeak_voice)]
        self.cpu_s = 0.0
        self.audio_s = 0.0

    def run(self) -> None:
        """Synthesise the text once, adding its process CPU time and audio duration to the totals."""
        cpu = time.process_time()
        samples = 0
        for ids in self.sentences:
            feeds = {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": self.scales,
            }
            samples += self.session.run(None, feeds)[0].size
        self.cpu_s += time.process_time() - cpu
        self.audio_s += samples / self.sample_rate

    @property
    def cpu_per_audio_s(self) -> float:
        return self.cpu_s / self.audio_s


def _piper_first_chunk_ms(voice: Any, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = None
    for _chunk in voice.synthesize(text):
        first = first or time.perf_counter()
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


FORMATS: dict[str, Any] = {
    "opus": "opus",
    "ogg_opus": "ogg_opus",
    "flac": "flac",
    "mp3": "mp3",
    "wav": "wav",
    "mulaw_8000": "mulaw_8000",
    "alaw_8000": "alaw_8000",
    "pcm_s16le 8 kHz": {"codec": "pcm_s16le", "sample_rate": 8000},
    "pcm_s16le 48 kHz": {"codec": "pcm_s16le", "sample_rate": 48000},
}
"""Formats whose time to first byte is measured against ``pcm_s16le`` at the voice's rate."""
FIRST_BYTES_TEXT = "Hello there, this is a short test of the first bytes."
"""One short sentence: its encoder run is brief, so the comparison is not drowned in its jitter."""


async def first_bytes_ms(url: str, fmt: Any, text: str = FIRST_BYTES_TEXT) -> float:
    """On a fresh socket with noise off: text sent (all at once, then end) to the first binary frame;
    the context is then cancelled."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "configure", "format": fmt, "noise": False}))
        ready = json.loads(await ws.recv())
        if ready["type"] != "ready":
            raise RuntimeError(f"server refused format {fmt!r}: {ready}")
        started = time.perf_counter()
        await ws.send(json.dumps({"type": "text", "text": text}))
        await ws.send(json.dumps({"type": "end"}))
        first: float | None = None
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                if first is None:
                    first = (time.perf_counter() - started) * 1000
                    await ws.send(json.dumps({"type": "cancel"}))  # the rest is not measured
                continue
            event = json.loads(message)
            if event["type"] == "cancelled" and first is not None:
                return first
            if event["type"] in ("error", "cancelled", "done"):
                raise RuntimeError(f"no audio for format {fmt!r}: {event}")


async def second_context_first_bytes_ms(url: str, text: str = FIRST_BYTES_TEXT) -> float:
    """Protocol 2: while a first context speaks the paragraph, a second starts; its text sent (all,
    then end) to its first binary frame.  Both are cancelled afterwards."""
    import websockets

    async with websockets.connect(f"{url}?protocol=2", max_size=None) as ws:
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "configure", "format": "pcm_s16le", "noise": False}))
        json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "text", "text": PARAGRAPH, "context_id": "first"}))
        await ws.send(json.dumps({"type": "end", "context_id": "first"}))
        channels: dict[int, str] = {}
        started: float | None = None
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "context":
                    channels[event["channel"]] = event["context_id"]
                elif event["type"] in ("error", "done"):
                    raise RuntimeError(f"second-context run ended early: {event}")
                continue
            if channels[message[0]] == "first" and started is None:
                started = time.perf_counter()  # the first context is speaking: start the second
                await ws.send(json.dumps({"type": "text", "text": text, "context_id": "second"}))
                await ws.send(json.dumps({"type": "end", "context_id": "second"}))
            elif channels[message[0]] == "second" and started is not None:
                first = (time.perf_counter() - started) * 1000
                for cid in ("first", "second"):
                    await ws.send(json.dumps({"type": "cancel", "context_id": cid}))
                cancelled = 0
                while cancelled < 2:
                    reply = await ws.recv()
                    if isinstance(reply, str) and json.loads(reply)["type"] in ("cancelled", "done"):
                        cancelled += 1
                return first


def second_context(url: str, runs: int) -> dict[str, float]:
    """A second context's first bytes while the first speaks, against a lone context's (pcm_s16le)."""
    alone: list[float] = []
    second: list[float] = []
    for _ in range(runs):
        alone.append(asyncio.run(first_bytes_ms(url, "pcm_s16le")))
        second.append(asyncio.run(second_context_first_bytes_ms(url)))
    a, b = statistics.median(alone), statistics.median(second)
    return {"alone_ms": a, "second_ms": b, "ratio": b / a}


def format_first_bytes(url: str, runs: int) -> dict[str, dict[str, float]]:
    """Each format's first-byte time against PCM's, interleaved run by run (medians, ratio)."""
    out: dict[str, dict[str, float]] = {}
    for name, fmt in FORMATS.items():
        pcm: list[float] = []
        other: list[float] = []
        for _ in range(runs):
            pcm.append(asyncio.run(first_bytes_ms(url, "pcm_s16le")))
            other.append(asyncio.run(first_bytes_ms(url, fmt)))
        p, o = statistics.median(pcm), statistics.median(other)
        out[name] = {"pcm_ms": p, "format_ms": o, "ratio": o / p}
    return out


def measure(runs: int, threads: int) -> dict[str, Any]:
    import psutil

    try:
        from piper import PiperVoice as PiperTtsVoice
    except ImportError:
        raise SystemExit("bench latency needs piper-tts: pip install 'streamvox[bench]'") from None
    from streamvox.engine.backends.piper.backend import bundled_voice_path

    proc, port = start_server(threads)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    raw_default = RawOnnx(PARAGRAPH, threads=0)
    raw_single = RawOnnx(PARAGRAPH, threads=1)
    raw_lifted = RawOnnx(PARAGRAPH, threads=1, lifted=True)
    floors = (raw_default, raw_single, raw_lifted)
    try:
        piper_voice = PiperTtsVoice.load(bundled_voice_path())
        server_proc = psutil.Process(proc.pid)
        asyncio.run(_server_utterance(url, PARAGRAPH))  # warm-up, every system
        _piper_first_chunk_ms(piper_voice, PARAGRAPH)
        for floor in floors:
            floor.run()
            floor.cpu_s = floor.audio_s = 0.0
        server_runs: list[ServerRun] = []
        piper_first: list[float] = []
        piper_total: list[float] = []
        cpu_s = 0.0
        window_before = process_cpu_s(server_proc)  # around the role counters' reads, which it encloses
        counters_before = server_counters(url)
        for _ in range(runs):  # interleaved, so machine noise falls on all systems alike
            before = process_cpu_s(server_proc)
            server_runs.append(asyncio.run(_server_utterance(url, PARAGRAPH)))
            cpu_s += process_cpu_s(server_proc) - before
            first, total = _piper_first_chunk_ms(piper_voice, PARAGRAPH)
            piper_first.append(first)
            piper_total.append(total)
            for floor in floors:
                floor.run()
        counters_after = server_counters(url)
        window_cpu_s = process_cpu_s(server_proc) - window_before
        by_role = cpu_by_role(counters_before, counters_after, sum(r.audio_s for r in server_runs))
        e2e = [asyncio.run(_llm_paced_ttfa(url, PARAGRAPH)) for _ in range(max(3, runs // 4))]
        formats = format_first_bytes(url, max(5, runs // 2))
        contexts = second_context(url, max(5, runs // 2))
    finally:
        proc.terminate()
        proc.wait(30)
    raw = raw_default.cpu_per_audio_s
    audio_s = sum(r.audio_s for r in server_runs)
    server_cpu_per_audio_s = cpu_s / audio_s
    ttfa = [r.ttfa_server_ms for r in server_runs]
    ttfa_client = [r.ttfa_client_ms for r in server_runs]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "runs": runs,
        "text_words": len(PARAGRAPH.split()),
        "server_ttfa_ms": {"p50": percentile(ttfa, 50), "p95": percentile(ttfa, 95)},
        "client_ttfa_ms": {"p50": percentile(ttfa_client, 50), "p95": percentile(ttfa_client, 95)},
        "llm_paced_ttfa_ms": {"p50": percentile(e2e, 50), "words_per_s": LLM_WORDS_PER_S},
        "piper_tts_first_chunk_ms": {"p50": percentile(piper_first, 50), "p95": percentile(piper_first, 95)},
        "piper_tts_total_ms": {"p50": percentile(piper_total, 50)},
        "ttfa_ratio_p50": percentile(ttfa, 50) / percentile(piper_first, 50),
        "ttfa_ratio_p95": percentile(ttfa, 95) / percentile(piper_first, 95),
        "rtf_server": statistics.median(r.rtf for r in server_runs),
        "server_cpu_s_per_audio_s": server_cpu_per_audio_s,
        "raw_onnx_cpu_s_per_audio_s": raw,
        "raw_onnx_1thread_cpu_s_per_audio_s": raw_single.cpu_per_audio_s,
        "overhead_ratio": server_cpu_per_audio_s / raw,
        "overhead_ratio_vs_1thread": server_cpu_per_audio_s / raw_single.cpu_per_audio_s,
        "raw_onnx_1thread_lifted_cpu_s_per_audio_s": raw_lifted.cpu_per_audio_s,
        "overhead_ratio_vs_1thread_lifted": server_cpu_per_audio_s / raw_lifted.cpu_per_audio_s,
        "server_cpu_ms_per_audio_s_by_role": by_role,
        "server_cpu_ms_per_audio_s_role_window": 1000 * window_cpu_s / audio_s,
        "audio_s_per_utterance": audio_s / runs,
        "format_first_bytes": formats,
        "second_context_first_bytes": contexts,
    }
    return result


def format_table(r: dict[str, Any]) -> str:
    rows = [
        (
            "server TTFA (flush -> first Opus packet written)",
            f"p50 {r['server_ttfa_ms']['p50']:.1f} ms",
            f"p95 {r['server_ttfa_ms']['p95']:.1f} ms",
        ),
        (
            "client TTFA (flush sent -> first packet received)",
            f"p50 {r['client_ttfa_ms']['p50']:.1f} ms",
            f"p95 {r['client_ttfa_ms']['p95']:.1f} ms",
        ),
        (
            "piper-tts 1.8 first chunk (same voice, same text)",
            f"p50 {r['piper_tts_first_chunk_ms']['p50']:.1f} ms",
            f"p95 {r['piper_tts_first_chunk_ms']['p95']:.1f} ms",
        ),
        ("TTFA ratio streamvox / piper-tts", f"p50 {r['ttfa_ratio_p50']:.3f}", f"p95 {r['ttfa_ratio_p95']:.3f}"),
        (
            "LLM-paced TTFA (first word sent -> first audio)",
            f"p50 {r['llm_paced_ttfa_ms']['p50']:.1f} ms",
            f"at {r['llm_paced_ttfa_ms']['words_per_s']:.0f} words/s",
        ),
        ("RTF (engine compute / audio)", f"{r['rtf_server']:.4f}", ""),
        ("server CPU s per audio s", f"{r['server_cpu_s_per_audio_s']:.4f}", ""),
        ("raw ONNX CPU s per audio s (onnxruntime defaults)", f"{r['raw_onnx_cpu_s_per_audio_s']:.4f}", ""),
        ("raw ONNX CPU s per audio s (1 thread)", f"{r['raw_onnx_1thread_cpu_s_per_audio_s']:.4f}", ""),
        ("overhead ratio (server / raw defaults)", f"{r['overhead_ratio']:.3f}", ""),
        ("overhead ratio (server / raw 1 thread)", f"{r['overhead_ratio_vs_1thread']:.3f}", ""),
        (
            "raw ONNX, graph rewritten as served (1 thread)",
            f"{r['raw_onnx_1thread_lifted_cpu_s_per_audio_s']:.4f}",
            "",
        ),
        ("overhead ratio (server / raw lifted 1 thread)", f"{r['overhead_ratio_vs_1thread_lifted']:.3f}", ""),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [
        f"streamvox bench latency — {r['date']}, {r['machine']}, {r['runs']} runs, "
        f"{r['text_words']}-word paragraph ({r['audio_s_per_utterance']:.2f} s audio)"
    ]
    lines += [f"  {name:<{width}}  {a:<18} {b}" for name, a, b in rows]
    if by_role := r.get("server_cpu_ms_per_audio_s_by_role"):
        split = ", ".join(f"{role.replace('_', ' ')} {ms:.1f}" for role, ms in by_role.items())
        lines.append(f"  server CPU ms per audio s by thread role: {split}")
    lines.append("  first bytes by format (text sent -> first binary frame, medians, interleaved with pcm_s16le):")
    for name, f in r["format_first_bytes"].items():
        lines.append(
            f"    {name:<18} {f['format_ms']:7.1f} ms  vs pcm {f['pcm_ms']:7.1f} ms  ratio {f['ratio']:.3f}"
            f"  ({f['format_ms'] - f['pcm_ms']:+.1f} ms)"
        )
    c = r["second_context_first_bytes"]
    lines.append(
        f"  second context while the first speaks (protocol 2): first bytes {c['second_ms']:.1f} ms vs "
        f"{c['alone_ms']:.1f} ms alone, ratio {c['ratio']:.3f}"
    )
    return "\n".join(lines)


def run_latency_bench(args: argparse.Namespace) -> int:
    if getattr(args, "dialect", None):
        from streamvox.bench.dialects import run_dialect_bench

        return run_dialect_bench(args.runs, args.threads, args.dialect, args.json)
    result = measure(args.runs, args.threads)
    print(json.dumps(result) if args.json else format_table(result))
    return 0

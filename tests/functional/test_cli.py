"""The console script: `say` writes real files; `serve` drains on SIGTERM and closes sockets with 1001."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import websockets
from streamvox.bench.ar import KV_CACHES, kv_bytes_per_value, t2s_step_bytes, t2s_step_macs
from streamvox.bench.ar_device import step_bytes as device_step_bytes
from streamvox.bench.asr import transcribe, wer
from streamvox.bench.harness import free_port, wait_healthy
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig
from streamvox.stream_server.cli import build_parser

STREAMVOX = [sys.executable, "-m", "streamvox.stream_server.cli"]
ROOT = Path(__file__).resolve().parents[2]


def bench_json(*args: str, timeout: float = 300) -> dict[str, Any]:
    """``streamvox bench ARGS --json`` from the repository root (where ``.ref/`` is); its JSON."""
    out = subprocess.run(
        [*STREAMVOX, "--log-level", "WARNING", "bench", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.asr
def test_say_writes_intelligible_ogg_and_wav(tmp_path: Path) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    for name in ("out.ogg", "out.wav"):
        target = tmp_path / name
        result = subprocess.run(
            [*STREAMVOX, "say", text, "-o", str(target), "--seed", "1"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        audio, rate = sf.read(str(target), dtype="float32")
        assert rate == (48000 if name.endswith(".ogg") else 22050)
        assert 1.5 < len(audio) / rate < 6
        assert wer(text, transcribe(audio, rate)) <= 0.15


def test_say_rejects_unknown_output_type_and_voice(tmp_path: Path) -> None:
    bad_type = subprocess.run([*STREAMVOX, "say", "hi", "-o", str(tmp_path / "x.mp3")], capture_output=True, text=True)
    assert bad_type.returncode == 2 and "unsupported output" in bad_type.stderr
    bad_voice = subprocess.run(
        [*STREAMVOX, "say", "hi", "-o", str(tmp_path / "x.wav"), "--voice", "nobody"], capture_output=True, text=True
    )
    assert bad_voice.returncode == 2 and "unknown voice" in bad_voice.stderr


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert args.unit_trace is None


def test_serve_refuses_a_unit_trace_it_cannot_write(tmp_path: Path) -> None:
    """Before loading any voice: a clear error and exit status 2, not a traceback at start-up."""
    target = tmp_path / "no-such-folder" / "units.jsonl"
    result = subprocess.run(
        [*STREAMVOX, "serve", "--port", str(free_port()), "--unit-trace", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"--unit-trace: cannot write to {target}" in result.stderr and "Traceback" not in result.stderr


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with the openssl command line."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_serves_https_and_wss(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [*STREAMVOX, "serve", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        wait_healthy(proc, port, tls=trust)

        async def client() -> tuple[dict, list[bytes]]:
            async with websockets.connect(f"wss://127.0.0.1:{port}/v1/stream", ssl=trust, max_size=None) as ws:
                ready = json.loads(await ws.recv())
                await ws.send(json.dumps({"type": "text", "text": "Spoken over TLS."}))
                await ws.send(json.dumps({"type": "end"}))
                audio = []
                while isinstance(message := await asyncio.wait_for(ws.recv(), 60), bytes) or (
                    json.loads(message)["type"] != "done"
                ):
                    if isinstance(message, bytes):
                        audio.append(message)
                return ready, audio

        ready, audio = asyncio.run(client())
        assert ready["type"] == "ready" and audio
        with pytest.raises(urllib.error.URLError) as refused:  # a client that does not trust it is refused
            urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=5)
        assert isinstance(refused.value.reason, ssl.SSLError)
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.stdout is not None and f"wss://127.0.0.1:{port}/v1/stream" in proc.stdout.read()


def test_tls_needs_both_files_that_exist(tmp_path: Path) -> None:
    missing = subprocess.run(
        [*STREAMVOX, "serve", "--tls-cert", str(tmp_path / "none.pem"), "--tls-key", str(tmp_path / "none.pem")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    cert, _ = _self_signed(tmp_path)
    half = subprocess.run([*STREAMVOX, "serve", "--tls-cert", str(cert)], capture_output=True, text=True)
    assert half.returncode == 2 and "both a certificate and a key" in half.stderr


@pytest.mark.parametrize(("drain_timeout", "expect"), [(30.0, "done"), (0.3, "cancelled")])
def test_sigterm_drains_contexts_and_closes_with_1001(drain_timeout: float, expect: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*STREAMVOX, "serve", "--port", str(port), "--drain-timeout", str(drain_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_healthy(proc, port)

        async def client() -> tuple[list[str], int | None]:
            events: list[str] = []
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/stream", max_size=None) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "text", "text": "Draining politely. " * 12}))
                await ws.send(json.dumps({"type": "end"}))
                while not isinstance(await ws.recv(), bytes):
                    pass
                proc.send_signal(signal.SIGTERM)
                try:
                    while True:
                        message = await asyncio.wait_for(ws.recv(), 60)
                        if isinstance(message, str):
                            events.append(json.loads(message)["type"])
                except websockets.ConnectionClosed as closed:
                    return events, closed.rcvd.code if closed.rcvd else None

        events, code = asyncio.run(client())
        assert expect in events
        assert code == 1001
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_bench_load_smoke(tmp_path: Path) -> None:
    """The load benchmark runs end to end and reports a sane row (figures themselves go in the README)."""
    plot = tmp_path / "load.png"
    result = bench_json(
        "load", "--streams", "1", "--seconds", "3", "--ramp", "0.5", "--pause", "0.2", "--plot", str(plot),
        "--unit-trace", timeout=240,
    )  # fmt: skip
    (row,) = result["rows"]
    assert row["streams"] == 1 and row["contexts"] >= 1 and row["errors"] == []
    assert 0 < row["ttfa_ms_p50"] < 5000 and row["audio_s"] > 1
    assert result["peer"]["ttfa_ms_p50"] > 0
    assert plot.stat().st_size > 5000
    # The server's own count of late units, read from its /metrics around the step.
    assert 0 <= row["server_late_behind_lead_work"] <= row["server_late_units"]
    assert row["server_late_s"] >= 0 and (row["server_late_s"] > 0) == (row["server_late_units"] > 0)
    # Where its CPU went, by thread role, per second of audio: the models' workers above all.
    by_role = row["server_cpu_ms_per_audio_s_by_role"]
    assert set(by_role) == {"workers", "runtime_pools", "event_loop", "engine", "other"}
    assert by_role["workers"] > 0 and by_role["event_loop"] > 0
    # The physical limit, measured in the same run: cores over the raw model's single-thread cost,
    # spread over the share of time a listener hears speech (a pause between replies lowers it).
    assert 0 < result["raw_cpu_s_per_audio_s"] < 2 and 0 < result["duty_cycle"] <= 1
    # That share is taken over each listener's own time connected (its turns, playback and pauses).
    assert row["present_s"] >= row["audio_s"]
    if row["pass"]:
        assert result["duty_cycle"] == pytest.approx(min(1.0, row["audio_s"] / row["present_s"]))
    cores = int(result["machine"].split(", ")[-1].split()[0])
    expected = cores / result["raw_cpu_s_per_audio_s"] / result["duty_cycle"]
    assert result["limit_streams"] == pytest.approx(expected)
    # Beside it, the same graph with its decoder lifted as the server runs it.
    assert 0 < result["raw_lifted_cpu_s_per_audio_s"] < 2
    lifted = cores / result["raw_lifted_cpu_s_per_audio_s"] / result["duty_cycle"]
    assert result["limit_streams_lifted"] == pytest.approx(lifted)
    # And the raw graph's cost with every core running it at once (what the cores give when all are busy).
    assert 0 < result["raw_all_cores_cpu_s_per_audio_s"] < 2
    all_cores = cores / result["raw_all_cores_cpu_s_per_audio_s"] / result["duty_cycle"]
    assert result["limit_streams_all_cores"] == pytest.approx(all_cores)
    # The server's unit trace splits the step at its arrivals (the ramp and 1 s after it).
    phases = row["phases"]
    assert set(phases) == {"arrivals", "after"} and phases["arrivals"]["seconds"] == pytest.approx(1.5)
    assert phases["arrivals"]["first_audio_units"] == 1 and phases["arrivals"]["audio_s_per_s"] > 0
    assert sum(p["units"] for p in phases.values()) >= 2 and 0 < phases["arrivals"]["workers_busy"] <= 1
    # Beside it, the server's CPU read every 0.25 s of the step.
    assert len(row["server_cpu_timeline"]) >= 8 and all(0 <= c <= 110 * cores for _, c in row["server_cpu_timeline"])
    assert 0 <= phases["arrivals"]["server_full_share"] <= 1 and phases["after"]["server_cpu_percent"] >= 0
    assert "started" not in row and "ended" not in row


@pytest.mark.slow
@pytest.mark.asr
def test_bench_first_span_smoke() -> None:
    """The first-span benchmark serves two first-span sizes, sends texts at LLM pace, and reports
    first audio and the streamed WER beside the one-shot WER."""
    result = bench_json("first-span", "--first-words", "6", "2", "--texts", "2", "--repeats", "1")
    assert result["texts"] == 2 and 0 <= result["one_shot_wer_pct"] < 50
    six, two = result["rows"]
    assert (six["first_words"], two["first_words"]) == (6, 2)
    assert two["first_audio_ms_p50"] < six["first_audio_ms_p50"]  # 4 words fewer to wait for, 50 ms each
    for row in (six, two):
        assert len(row["transcripts"]) == 2 and 0 <= row["wer_pct"] < 50


@pytest.mark.slow
@pytest.mark.ray
def test_bench_ray_smoke() -> None:
    """The Ray-vs-standalone benchmark starts both (same cores), runs a step against each and
    reports TTFA at both ends, inter-packet gaps and each process tree's CPU."""
    result = bench_json("ray", "--streams", "1", "--seconds", "3", "--ramp", "0.5")
    assert result["standalone_workers"] == 2 and set(result["rows"]) == {"standalone", "ray"}
    for (row,) in result["rows"].values():
        assert row["streams"] == 1 and row["contexts"] >= 1 and row["errors"] == []
        assert 0 < row["ttfa_ms_p50"] < row["client_ttfa_ms_p50"] < 5000
        assert row["packet_gap_ms_p95"] is not None and row["server_cpu_s_per_audio_s"] > 0
    cpu = {name: rows[0]["server_cpu_s_per_audio_s"] for name, rows in result["rows"].items()}
    assert cpu["ray"] > cpu["standalone"]  # Ray's own processes (GCS, raylet, proxy) are counted too


@pytest.mark.slow
def test_bench_latency_smoke() -> None:
    result = bench_json("latency", "--runs", "2")
    assert result["runs"] == 2
    assert 0 < result["server_ttfa_ms"]["p50"] < result["piper_tts_first_chunk_ms"]["p50"] * 5
    assert 0.3 < result["overhead_ratio"] < 5 and 0 < result["rtf_server"] < 1
    floor = result["raw_onnx_1thread_lifted_cpu_s_per_audio_s"]
    assert result["overhead_ratio_vs_1thread_lifted"] == pytest.approx(result["server_cpu_s_per_audio_s"] / floor)
    by_role = result["server_cpu_ms_per_audio_s_by_role"]
    assert set(by_role) == {"workers", "runtime_pools", "event_loop", "engine", "other"}
    assert by_role["workers"] > 0 and by_role["event_loop"] > 0  # the model, and the Opus packets and sockets
    # The roles share out the process's CPU over the window their counters cover, no more. /proc
    # gives each thread's time in whole clock ticks, so each thread that ran may read a tick high.
    audio_s = result["runs"] * result["audio_s_per_utterance"]
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    assert sum(by_role.values()) <= result["server_cpu_ms_per_audio_s_role_window"] + 16 * tick_ms / audio_s
    # That window encloses each utterance's, which the overhead ratio sums (a tick each way per read).
    utterances_ms = 1000 * result["server_cpu_s_per_audio_s"]
    assert result["server_cpu_ms_per_audio_s_role_window"] >= utterances_ms - (result["runs"] + 1) * tick_ms / audio_s


@pytest.mark.slow
def test_bench_latency_by_dialect_smoke() -> None:
    """Every dialect's first audio is timed beside the native protocol's (figures go in the README)."""
    result = bench_json("latency", "--dialect", "all", "--runs", "2")
    assert set(result) == {"openai", "elevenlabs", "cartesia", "wyoming"}
    for row in result.values():
        assert 0 < row["dialect_ms"] < 2000 and 0 < row["native_ms"] < 2000


@pytest.mark.slow
def test_bench_batch_smoke() -> None:
    """The batching benchmark times all three ways for each cell and names a winner."""
    result = bench_json("batch", "--windows", "16", "--batches", "1", "2", "--repeats", "1", timeout=240)
    assert [(r["window_frames"], r["batch"]) for r in result["rows"]] == [(16, 1), (16, 2)]
    for row in result["rows"]:
        speeds = [row[way] for way in ("batched_1_thread", "batched_all_cores", "parallel_1_thread_each")]
        assert all(v > 0 for v in speeds)
        assert row[row["winner"]] == max(speeds)


@pytest.mark.slow
def test_bench_ar_smoke() -> None:
    """The AR benchmark runs ours and the reference on the same v2-size checkpoint and reports both."""
    result = bench_json("ar", "--tokens", "4", "--batches", "1", "2", "--text-len", "8", "--prompt-len", "8")
    rows = [(r["weights"], r["batch"], r["tokens"]) for r in result["ours"]]
    labels = ["fp32", "int8", "int8+bf16kv", "int8+int8kv"]
    assert rows == [(label, batch, 4 * batch) for label in labels for batch in (1, 2)]
    assert result["bandwidth_gbs"] > 0 and result["matmul_gmacs_fp32"] > 0 and result["matmul_gmacs_int8"] > 0
    for row in result["ours"]:  # the default: each batch size's median of 3 alternating runs
        runs = row["tokens_per_s_runs"]
        assert result["repeats"] == 3 and len(runs) == 3 and row["tokens_per_s"] == sorted(runs)[1]
    # The bound is arithmetic on what the run measured (a step may beat it on a machine whose
    # bandwidth probe reads slower than the step's weights stream, so no timing order is asserted).
    cfg = T2SConfig()
    for row in result["ours"]:
        int8, cache = row["weights"].startswith("int8"), row["weights"].removeprefix("int8").removeprefix("fp32")
        width = 8 + 8 + (row["steps"] + 1) / 2
        read = t2s_step_bytes(cfg, int8, row["batch"], width, kv_bytes_per_value(cfg, KV_CACHES[cache]))
        memory_ms = 1000 * read / (result["bandwidth_gbs"] * 1e9)
        gmacs = result["matmul_gmacs_int8" if int8 else "matmul_gmacs_fp32"]
        compute_ms = 1000 * t2s_step_macs(cfg, row["batch"], width) / (gmacs * 1e9)
        assert row["steps"] == 4 and row["step_ms"] > 0
        assert row["bound_ms"] == pytest.approx(max(memory_ms, compute_ms))
        assert row["bound_by"] == ("memory" if memory_ms >= compute_ms else "compute")
        assert row["ratio_to_bound"] == pytest.approx(row["step_ms"] / row["bound_ms"])
        floor_s = row["prefill_s"] + row["steps"] * row["bound_ms"] / 1000
        assert row["ceiling_tokens_per_s"] == pytest.approx(row["tokens"] / floor_s) and row["ceiling_vs_batch1"] > 0
    reference = result["reference"]
    assert reference["tokens"] == 4 and reference["tokens_per_s"] > 0
    assert reference["audio_seconds"] == 4 * 1280 / 32000 and reference["first_audio_ms"] > 0 and reference["rtf"] > 0
    assert result["speedup_vs_reference_batch1_fp32"] > 0 and result["speedup_vs_reference_batch1_int8"] > 0
    rounding = result["rounding_vs_fp32"]
    assert [r["path"] for r in rounding] == ["fp32+bf16kv", "fp32+int8kv", "int8", "int8+bf16kv", "int8+int8kv"]
    for row in rounding:  # 5 logit rows each (prefill + 4 steps); a cheaper path moves them
        assert row["max_logit_diff"] > 0 and row["mean_kl"] >= 0 and 0 <= row["top1_agreement"] <= 1
        assert row["top1_agreement"] * 5 == pytest.approx(round(row["top1_agreement"] * 5))
    streaming = result["streaming"]
    assert [r["weights"] for r in streaming] == ["fp32", "int8", "int8 + bf16 vocoder", "int8 + bf16 vocoder"]
    assert [(r["schedule"]["first"], r["schedule"]["first_lookahead"]) for r in streaming] == [(12, 4)] * 3 + [(8, 2)]
    for row in streaming:
        assert row["tokens"] == 4 and row["audio_s"] == 4 * 1280 / 32000
        assert row["first_chunk_ms"] > 0 and row["rtf"] > 0 and row["vocoder_one_shot_rtf"] > 0
        parts = row["first_chunk_t2s_ms"] + row["first_chunk_vocoder_ms"]
        assert 0 < row["first_chunk_prefill_ms"] < row["first_chunk_t2s_ms"] and parts <= row["first_chunk_ms"]
        assert row["t2s_rtf"] > 0 and row["vocoder_rtf"] > 0 and row["t2s_rtf"] + row["vocoder_rtf"] <= row["rtf"]
        assert row["tokens_decoded_per_token"] >= row["tokens_vocoded_per_token"] >= 1 and row["stall_ms"] >= 0


@pytest.mark.slow
def test_bench_ar_serve_smoke() -> None:
    """Listeners of the two schedules start together over a real server; each hears the whole
    reply (random weights never end a sentence early, so every run's reply is as long)."""
    result = bench_json(
        "ar-serve", "--size", "tiny", "--max-len", "220", "--streams", "1", "2", "--repeats", "1", "--unit-trace"
    )
    runs = result["runs"]
    assert [(r["streams"], r["schedule"]) for r in runs] == [
        (1, "default"),
        (1, "fast start"),
        (2, "default"),
        (2, "fast start"),
    ]
    assert result["fast_start"] == {"first": 8, "first_lookahead": 2}
    for run in runs:
        assert len(run["first_audio_ms"]) == run["streams"] and min(run["first_audio_ms"]) > 0
        assert run["first_audio_ms"] == sorted(run["first_audio_ms"])
        assert run["stall_ms"] >= 0 and 0 <= run["stalled_listeners"] <= run["streams"]
    assert len({r["audio_s"] for r in runs}) == 1 and runs[0]["audio_s"] > 1
    # The server's units in each run, by action: a prefill per sentence of each listener's reply (two),
    # batched steps, vocoder chunks; audio only from the vocoder's.
    for run in runs:
        units = run["units"]
        assert units["start"]["units"] == 2 * run["streams"] and units["start"]["batch_mean"] == 1
        assert units["step"]["units"] > 10 and 1 <= units["step"]["batch_mean"] <= run["streams"]
        assert units["chunk"]["audio_s"] > 0 and units["start"]["audio_s"] == units["step"]["audio_s"] == 0
        audio = sum(a["audio_s"] for a in units.values())
        assert audio == pytest.approx(run["streams"] * run["audio_s"], rel=0.01)


@pytest.mark.slow
def test_bench_ar_device_smoke() -> None:
    """The device bench on the CPU: the token check, the speed rows against the floor, streaming and
    the real-time estimate, for the variable and the eager fixed-shape step."""
    result = bench_json(
        "ar-device",
        "--device",
        "cpu",
        "--modes",
        "variable",
        "eager",
        "--batches",
        "1",
        "2",
        "--tokens",
        "4",
        "--check-batch",
        "2",
        "--check-tokens",
        "5",
        "--text-len",
        "8",
        "--prompt-len",
        "8",
    )
    assert result["device"] == "cpu" and result["dtype"] == "float32" and result["bandwidth_gbs"] > 0
    assert result["tokens"] == {
        mode: {"equal": True, "first_divergence_step": None, "tokens_per_stream": [5, 5]}
        for mode in ("eager", "variable")
    }
    assert [(r["mode"], r["batch"], r["steps"]) for r in result["speed"]] == [
        ("variable", 1, 4),
        ("variable", 2, 4),
        ("eager", 1, 4),
        ("eager", 2, 4),
    ]
    for row in result["speed"]:
        # The variable step reads the cache half-way on average; the fixed-shape one all of max_len.
        width = 8 + 8 + 5 / 2 if row["mode"] == "variable" else 8 + 8 + 4 + 8
        floor_ms = 1000 * device_step_bytes(T2SConfig(), 4, row["batch"], width) / (result["bandwidth_gbs"] * 1e9)
        assert row["floor_ms"] == pytest.approx(floor_ms)
        assert row["ratio_to_floor"] == pytest.approx(row["step_ms"] / row["floor_ms"])
        assert row["step_ms"] > 0 and row["sample_ms"] > 0 and row["tokens_per_s"] > 0
    assert [(r["step"], r["tokens"]) for r in result["streaming"]] == [("variable", 4), ("eager", 4)]
    for row in result["streaming"]:
        assert row["first_chunk_ms"] > 0 and row["t2s_rtf"] > 0 and row["vocoder_rtf"] > 0
    for estimate in result["real_time_streams"].values():
        assert estimate["streams"] in (0, 1, 2)


def test_bench_dia_smoke() -> None:
    """The Dia benchmark times ours (fp32, bf16, the variable and the fixed-shape step, two batch
    sizes) and transformers on one directory, with the bandwidth bound beside each step."""
    result = bench_json("dia", "--size", "tiny", "--steps", "8", "--batches", "1", "2", "--modes", "variable", "eager")
    rows = [(r["dtype"], r["mode"], r["batch"]) for r in result["ours"]]
    assert rows == [(d, m, b) for d in ("float32", "bfloat16") for m in ("variable", "eager") for b in (1, 2)]
    assert result["bandwidth_gbs"] > 0 and result["device"] == "cpu"
    for row in result["ours"]:
        assert row["step_ms"] > 0 and row["bound_ms"] > 0
        assert row["ratio_to_bound"] == pytest.approx(row["step_ms"] / row["bound_ms"])
    assert result["reference"]["step_ms"] > 0 and result["speedup_vs_reference_batch1_fp32"] > 0
    assert [r["text_bytes"] for r in result["encoder_prefill"]] == [32, 128, 512]
    assert [r["window"] for r in result["dac"]] == ["first", "steady"]
    assert result["first_audio_after_steps"] == 8 + 10 + 15 - 1  # first window, its context, the delay

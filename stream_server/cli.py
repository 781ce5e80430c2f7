"""``streamvox`` command line: serve, say, bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from streamvox.engine.api import SynthesisParams
from streamvox.engine.core import EngineConfig
from streamvox.engine.registry import BACKENDS, VoiceSpec
from streamvox.engine.text.segmenter import SegmenterConfig
from streamvox.stream_server.config import DEFAULT_HOST, DEFAULT_MAX_LEAD_S, DEFAULT_PORT, ServerConfig
from streamvox.stream_server.keys import ENV_KEYS


def _voice_specs(piper: list[str], gpt_sovits: list[str], generic: list[VoiceSpec]) -> tuple[VoiceSpec, ...]:
    """The voices named by ``--voice``/``--voice-path``, ``--gpt-sovits-voice`` and ``--voice-dir``."""
    return (
        *(VoiceSpec("piper", p) for p in piper),
        *(VoiceSpec("gpt-sovits", d) for d in gpt_sovits),
        *generic,
    )


def _voice_dir(text: str) -> VoiceSpec:
    try:
        return VoiceSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_voice_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--voice-dir",
        action="append",
        default=[],
        type=_voice_dir,
        metavar="KIND=PATH",
        help=f"also serve this voice of family KIND ({', '.join(BACKENDS)}); repeatable",
    )


def _voice_alias(text: str) -> tuple[str, str]:
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise argparse.ArgumentTypeError(f"expected NAME=VOICE_ID, got {text!r}")
    return name, target


def _serve_on_ray(config: ServerConfig, replicas: int, max_replicas: int | None, cpus: float) -> int:
    """``serve --ray``: the WebSocket dialects on a local Ray Serve instance (TLS, the HTTP speech
    routes and Wyoming are the aiohttp server's)."""
    if config.tls_cert or config.wyoming_port is not None:
        raise ValueError("--ray serves the WebSocket dialects without TLS or Wyoming (put TLS at the load balancer)")
    try:
        from streamvox.deploy.ray_app import Placement, run_local
    except ImportError:
        raise ValueError("--ray needs the optional extra: pip install 'streamvox[ray]'") from None
    return run_local(config, config.host, config.port, Placement(replicas, cpus, max_replicas=max_replicas))


def _check_writable(path: str, flag: str) -> None:
    """Raise ``ValueError`` naming ``flag`` unless ``path`` can be opened for appending."""
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag}: cannot write to {path} ({exc.strerror or exc})") from exc


def _serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web
    from streamvox.stream_server.app import STREAM_PATH, create_app
    from streamvox.stream_server.auth import RedactingAccessLogger
    from streamvox.stream_server.tls import TLSConfigError, server_ssl_context

    try:
        if args.unit_trace:
            _check_writable(args.unit_trace, "--unit-trace")
        config = ServerConfig(
            host=args.host,
            port=args.port,
            voices=_voice_specs(args.voice, args.gpt_sovits_voice, args.voice_dir),
            include_bundled_voice=not args.no_bundled_voice,
            voice_aliases=tuple(args.voice_alias),
            default_seed=args.seed,
            wyoming_port=args.wyoming_port,
            wyoming_host=args.wyoming_host,
            threads=args.threads,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            drain_timeout_s=args.drain_timeout,
            idle_timeout_s=args.idle_timeout or None,
            ping_interval_s=args.ping_interval,
            max_sessions=args.max_sessions,
            keys_file=args.keys,
            api_keys=os.environ.get(ENV_KEYS) or None,
            token_secret=os.environ.get("STREAMVOX_TOKEN_SECRET") or None,
            allow_origins=tuple(args.allow_origin),
            allow_anonymous=args.allow_anonymous,
            engine=EngineConfig(max_lead_s=args.max_lead or None, workers=args.workers, unit_trace=args.unit_trace),
            segmenter=SegmenterConfig(first_max_words=args.first_words),
        )
        if args.ray:
            return _serve_on_ray(config, args.replicas, args.max_replicas, args.cpus_per_replica)
        ssl_context = server_ssl_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        app = create_app(config)
    except (ValueError, TLSConfigError) as exc:  # VoiceLoadError and KeysFileError are ValueErrors
        print(f"error: {exc}", file=sys.stderr)
        return 2
    http, ws = config.scheme
    print(
        f"streamvox serving on {http}://{config.host}:{config.port}/ "
        f"(WebSocket {ws}://{config.host}:{config.port}{STREAM_PATH})",
        flush=True,
    )
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        ssl_context=ssl_context,
        print=None,
        shutdown_timeout=config.drain_timeout_s + 5,
        access_log_class=RedactingAccessLogger,
    )
    return 0


def _keys(args: argparse.Namespace) -> int:
    """``streamvox keys add|list|revoke``: edit the keys file (the server re-reads it)."""
    from streamvox.stream_server.keys import KeyLimits, KeysFile, new_key

    try:
        if args.action == "add":
            contents = KeysFile.read_or_new(args.keys)
            limits = KeyLimits(args.sessions, args.chars_per_minute, args.audio_seconds_per_day)
            voices = [v for v in args.voices.split(",") if v] if args.voices else None
            key, record = new_key(args.name, limits, voices)
            contents.add(record)
            contents.write(args.keys)
            print(key)
            print(f"added key {record.name!r} to {args.keys}; the key is shown only this once", file=sys.stderr)
        elif args.action == "revoke":
            contents = KeysFile.read(args.keys)
            contents.revoke(args.name)
            contents.write(args.keys)
            print(f"revoked key {args.name!r}", file=sys.stderr)
        else:
            for record in KeysFile.read(args.keys).records:
                limits = {k: v for k, v in vars(record.limits).items() if v is not None}
                state = "revoked" if record.revoked else "live"
                print(f"{record.name}\t{state}\tlimits={limits or 'none'}\tvoices={record.voices or 'all'}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _say(args: argparse.Namespace) -> int:
    from streamvox.engine.core import EngineCore
    from streamvox.engine.registry import VoiceRegistry
    from streamvox.stream_server.synthesis import SynthesisError, synthesize, write_audio

    text = args.text if args.text != "-" else sys.stdin.read()
    specs = _voice_specs(args.voice_path, args.gpt_sovits_voice, args.voice_dir)
    registry = VoiceRegistry.load(specs, include_bundled=True, threads=args.threads)
    try:
        voice = registry.get(args.voice)
    except KeyError:
        print(f"error: unknown voice {args.voice!r}", file=sys.stderr)
        return 2
    length_scale = voice.length_scale / args.speed
    engine = EngineCore(registry)
    engine.start()
    try:
        result = synthesize(engine, voice.id, text, SynthesisParams(length_scale=length_scale, seed=args.seed))
    except SynthesisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.stop()
    out = Path(args.output)
    try:
        samples = write_audio(result, out, args.sample_rate)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = len(result.audio) / result.sample_rate
    print(f"wrote {out} ({seconds:.2f} s, {samples} samples, {len(result.segments)} segments)")
    return 0


def _bench_latency(args: argparse.Namespace) -> int:
    from streamvox.bench.latency import run_latency_bench

    return run_latency_bench(args)


def _bench_load(args: argparse.Namespace) -> int:
    from streamvox.bench.load import run_load_bench

    return run_load_bench(args)


def _bench_first_span(args: argparse.Namespace) -> int:
    from streamvox.bench.first_span import run_first_span_bench

    return run_first_span_bench(args)


def _bench_ray(args: argparse.Namespace) -> int:
    from streamvox.bench.ray_load import run_ray_bench

    return run_ray_bench(args)


def _bench_soak(args: argparse.Namespace) -> int:
    from streamvox.bench.soak import run_soak_bench

    return run_soak_bench(args)


def _bench_batch(args: argparse.Namespace) -> int:
    from streamvox.bench.batch import run_batch_bench

    return run_batch_bench(args)


def _bench_ar(args: argparse.Namespace) -> int:
    from streamvox.bench.ar import run_ar_bench

    return run_ar_bench(args)


def _add_fast_start(parser: argparse.ArgumentParser, whose: str) -> None:
    """``--fast-start FIRST LOOKAHEAD``: the fast-start chunk schedule a GPT-SoVITS bench sets beside the default."""
    parser.add_argument(
        "--fast-start",
        type=int,
        nargs=2,
        default=[8, 2],
        metavar=("FIRST", "LOOKAHEAD"),
        help=f"{whose}'s first chunk and its lookahead (tokens)",
    )


def _bench_ar_serve(args: argparse.Namespace) -> int:
    from streamvox.bench.ar_serve import run_ar_serve_bench

    return run_ar_serve_bench(args)


STANDALONE_BENCHES = {
    "ar-device": "GPT-SoVITS's fixed-shape T2S step on a device: eager, compiled, CUDA graph",
    "dia": "Dia decode ms/step vs the memory-bandwidth bound and transformers",
}


def _bench_standalone(args: argparse.Namespace) -> int:
    from streamvox.bench.standalone import main

    return main(args.bench, args.options, prog=f"streamvox bench {args.bench}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamvox", description="Real-time streaming text-to-speech server.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the WebSocket server")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument(
        "--voice",
        action="append",
        default=[],
        metavar="MODEL.onnx",
        help="also serve this Piper voice (repeatable; .onnx.json beside it)",
    )
    serve.add_argument(
        "--gpt-sovits-voice",
        action="append",
        default=[],
        metavar="DIR",
        help="also serve this GPT-SoVITS v2 voice (repeatable; DIR/voice.json names its files)",
    )
    _add_voice_dir(serve)
    serve.add_argument("--no-bundled-voice", action="store_true", help="do not load en_US-joe-medium")
    serve.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: one per core)")
    serve.add_argument(
        "--workers", type=int, default=0, help="windows of different streams run at once (0: one per core)"
    )
    serve.add_argument(
        "--unit-trace",
        default=None,
        metavar="FILE",
        help="append a JSON line to FILE for every unit the engine runs (a scheduling diagnostic)",
    )
    serve.add_argument(
        "--tls-cert", default=None, metavar="CERT.pem", help="serve https:// and wss:// (needs --tls-key)"
    )
    serve.add_argument("--tls-key", default=None, metavar="KEY.pem", help="the certificate's private key")
    serve.add_argument(
        "--idle-timeout", type=float, default=300.0, help="close sessions silent this long, none speaking (0: never)"
    )
    serve.add_argument(
        "--wyoming-port", type=int, default=None, help="also serve Wyoming (Home Assistant) on this TCP port"
    )
    serve.add_argument(
        "--wyoming-host", default="127.0.0.1", help="the Wyoming listener's address (no auth: loopback or a LAN)"
    )
    serve.add_argument(
        "--seed", type=int, default=None, help="seed contexts whose client names none (reproducible audio)"
    )
    serve.add_argument(
        "--voice-alias",
        action="append",
        default=[],
        type=_voice_alias,
        metavar="NAME=VOICE_ID",
        help="a voice name the compatible dialects accept (OpenAI, ElevenLabs, Cartesia ids); repeatable",
    )
    serve.add_argument("--ping-interval", type=float, default=30.0, help="seconds between WebSocket pings")
    serve.add_argument("--drain-timeout", type=float, default=10.0, help="seconds open contexts get on SIGTERM")
    serve.add_argument("--max-sessions", type=int, default=64, help="refuse sessions beyond this (close 1013)")
    serve.add_argument(
        "--keys",
        default=None,
        metavar="FILE",
        help=f"API keys file (streamvox keys add); keys may also come in ${ENV_KEYS}",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a browser origin whose pages may open sockets (repeatable; * for any)",
    )
    serve.add_argument(
        "--ray", action="store_true", help="serve on a local Ray Serve instance (needs streamvox[ray]; WebSockets)"
    )
    serve.add_argument("--replicas", type=int, default=2, help="with --ray: replicas, each its own engine")
    serve.add_argument(
        "--max-replicas", type=int, default=None, help="with --ray: autoscale from --replicas up to this many"
    )
    serve.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        help="with --ray: CPUs each replica reserves (its engine workers and threads, unless set)",
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        help="serve a non-loopback address without keys (anyone who can reach it may use it)",
    )
    serve.add_argument(
        "--first-words",
        type=int,
        default=SegmenterConfig.first_max_words,
        help="a reply's first span is cut once this many words have arrived (fewer: sooner first audio); "
        "it speaks all but the last, which the voice reads ahead for prosody",
    )
    serve.add_argument(
        "--max-lead",
        type=float,
        default=DEFAULT_MAX_LEAD_S,
        help="seconds generation may run ahead of a listener's playback (0: no limit)",
    )
    serve.set_defaults(func=_serve)

    say = sub.add_parser("say", help="synthesise text to a .wav or .ogg file through the engine")
    say.add_argument("text", help="text to speak, or - for standard input")
    say.add_argument("-o", "--output", required=True, help="output file: .wav, .ogg or .opus")
    say.add_argument("--voice", default=None, help="voice id (default: the bundled voice)")
    say.add_argument("--voice-path", action="append", default=[], metavar="MODEL.onnx")
    say.add_argument("--gpt-sovits-voice", action="append", default=[], metavar="DIR", help="a GPT-SoVITS v2 voice")
    _add_voice_dir(say)
    say.add_argument("--speed", type=float, default=1.0)
    say.add_argument("--seed", type=int, default=None)
    say.add_argument("--sample-rate", type=int, default=None, help="resample .wav output to this rate")
    say.add_argument("--threads", type=int, default=0)
    say.set_defaults(func=_say)

    bench = sub.add_parser("bench", help="benchmarks that print figures measured side by side")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    latency = bench_sub.add_parser("latency", help="server TTFA vs piper-tts, RTF and overhead ratio")
    latency.add_argument("--runs", type=int, default=20, help="utterances measured per system")
    latency.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    latency.add_argument("--threads", type=int, default=0)
    latency.add_argument(
        "--dialect",
        choices=("openai", "elevenlabs", "cartesia", "wyoming", "all"),
        help="instead: first audio through this compatible dialect (or all) vs the native protocol",
    )
    latency.set_defaults(func=_bench_latency)
    batch = bench_sub.add_parser("batch", help="decoder: batched windows vs parallel single-thread windows")
    batch.add_argument("--windows", type=int, nargs="+", default=[64, 128, 256, 512], help="window sizes (frames)")
    batch.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="batch sizes")
    batch.add_argument("--repeats", type=int, default=3, help="timed repeats per cell (best is kept)")
    batch.add_argument("--json", action="store_true")
    batch.set_defaults(func=_bench_batch)
    ar = bench_sub.add_parser("ar", help="GPT-SoVITS T2S decode tokens/s at several batch sizes vs the reference")
    ar.add_argument("--tokens", type=int, default=100, help="tokens decoded per stream")
    ar.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ar.add_argument("--text-len", type=int, default=60, help="phoneme ids in the prompt text")
    ar.add_argument("--prompt-len", type=int, default=150, help="semantic tokens of the reference audio")
    ar.add_argument(
        "--reference",
        default=".ref/gpt-sovits",
        help="gpt-sovits-cpufast installed with --target (what scripts/setup.sh test does); '' to skip",
    )
    _add_fast_start(ar, "the extra streaming row")
    ar.add_argument("--repeats", type=int, default=3, help="runs of each batch size, alternating; the median is kept")
    ar.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ar.add_argument("--json", action="store_true")
    ar.set_defaults(func=_bench_ar)
    ar_serve = bench_sub.add_parser("ar-serve", help="GPT-SoVITS streams starting together over a real server")
    ar_serve.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4], help="stream counts")
    ar_serve.add_argument("--repeats", type=int, default=2, help="runs of each count per schedule")
    ar_serve.add_argument("--max-len", type=int, default=320, help="the voice's cache positions (sets reply length)")
    _add_fast_start(ar_serve, "the second voice")
    ar_serve.add_argument("--size", choices=["v2", "tiny"], default="v2", help="the random voice's size")
    ar_serve.add_argument(
        "--unit-trace", action="store_true", help="trace the server's units; print each run's units by action"
    )
    ar_serve.add_argument("--json", action="store_true")
    ar_serve.set_defaults(func=_bench_ar_serve)
    # The options of these benches live with them (streamvox.bench.standalone), which also runs them
    # without the server's dependencies on a bare GPU machine; "+" keeps argparse from reading them here.
    for name, summary in STANDALONE_BENCHES.items():
        standalone = bench_sub.add_parser(
            name, help=f"{summary} (--help: its options)", add_help=False, prefix_chars="+"
        )
        standalone.add_argument("options", nargs=argparse.REMAINDER)
        standalone.set_defaults(func=_bench_standalone, bench=name)
    load = bench_sub.add_parser("load", help="N concurrent LLM-paced listeners: TTFA, underruns, CPU")
    load.add_argument("--streams", type=int, default=16, help="concurrent streams (the upper bound with --find-max)")
    load.add_argument("--seconds", type=float, default=20.0, help="how long each step runs")
    load.add_argument("--find-max", action="store_true", help="step N up until a step fails")
    load.add_argument("--words-per-s", type=float, default=15.0, help="LLM text pace per stream")
    load.add_argument("--ramp", type=float, default=2.0, help="clients connect spread over this many seconds")
    load.add_argument(
        "--pause", type=float, default=0.0, help="seconds between one reply's end of playback and the next reply"
    )
    load.add_argument("--ttfa-bound", type=float, default=250.0, help="p95 server TTFA a passing step needs (ms)")
    load.add_argument("--url", default=None, help="an already running server (default: start one)")
    load.add_argument("--max-lead", type=float, default=DEFAULT_MAX_LEAD_S, help="lead limit for the started server")
    load.add_argument("--threads", type=int, default=0)
    load.add_argument("--workers", type=int, default=0, help="engine workers of the started server (0: per core)")
    load.add_argument("--plot", default=None, metavar="FILE.png", help="draw TTFA and underruns against N")
    load.add_argument(
        "--unit-trace",
        action="store_true",
        help="trace the started server's units; split each step into its arrival burst and the rest",
    )
    load.add_argument("--no-peer", action="store_true", help="skip the piper-tts baseline")
    load.add_argument("--json", action="store_true")
    load.set_defaults(func=_bench_load)
    first_span = bench_sub.add_parser(
        "first-span", help="LLM-paced first audio and streamed WER per first-span size (needs the test extra)"
    )
    first_span.add_argument("--first-words", type=int, nargs="+", default=[6, 4, 3], help="first-span limits to try")
    first_span.add_argument("--texts", type=int, default=40, help="how many of the built-in texts")
    first_span.add_argument("--repeats", type=int, default=3, help="runs per text, one seed each")
    first_span.add_argument("--wer-margin", type=float, default=0.5, help="points of WER over one-shot allowed")
    first_span.add_argument("--json", action="store_true")
    first_span.set_defaults(func=_bench_first_span)
    ray_bench = bench_sub.add_parser("ray", help="bench load against Ray Serve and one server with the same cores")
    ray_bench.add_argument("--replicas", type=int, default=2)
    ray_bench.add_argument("--cpus-per-replica", type=float, default=1.0)
    ray_bench.add_argument("--streams", type=int, default=16, help="concurrent streams (the bound with --find-max)")
    ray_bench.add_argument("--seconds", type=float, default=20.0, help="how long each step runs")
    ray_bench.add_argument("--find-max", action="store_true", help="step N up until a step fails, per target")
    ray_bench.add_argument("--words-per-s", type=float, default=15.0)
    ray_bench.add_argument("--ramp", type=float, default=2.0)
    ray_bench.add_argument("--pause", type=float, default=0.0)
    ray_bench.add_argument("--ttfa-bound", type=float, default=250.0, help="p95 server TTFA a passing step needs (ms)")
    ray_bench.add_argument("--max-lead", type=float, default=DEFAULT_MAX_LEAD_S)
    ray_bench.add_argument("--json", action="store_true")
    ray_bench.set_defaults(func=_bench_ray)
    soak = bench_sub.add_parser("soak", help="N listeners for M minutes: RSS, fds, TTFA, underruns over time")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--streams", type=int, default=None, help="listeners (default: 80 %% of the measured maximum)")
    soak.add_argument("--fuzz", action="store_true", help="mix in a hostile client (one bad socket a second)")
    soak.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    soak.add_argument("--words-per-s", type=float, default=15.0)
    soak.add_argument("--ramp", type=float, default=2.0)
    soak.add_argument("--pause", type=float, default=0.0, help="seconds between a reply's end and the next")
    soak.add_argument("--max-lead", type=float, default=DEFAULT_MAX_LEAD_S)
    soak.add_argument("--threads", type=int, default=0)
    soak.add_argument("--workers", type=int, default=0)
    soak.add_argument("--plot", default=None, metavar="FILE.png", help="draw RSS, fds, TTFA and underruns over time")
    soak.add_argument("--json", action="store_true")
    soak.set_defaults(func=_bench_soak)
    keys = sub.add_parser("keys", help="manage API keys")
    keys.add_argument("action", choices=["add", "list", "revoke"])
    keys.add_argument("name", nargs="?", default=None, help="the key's name (add, revoke)")
    keys.add_argument("--keys", required=True, metavar="FILE", help="the keys file (made by the first add)")
    keys.add_argument("--sessions", type=int, default=None, help="sessions open at once")
    keys.add_argument("--chars-per-minute", type=int, default=None, help="characters of text per minute")
    keys.add_argument("--audio-seconds-per-day", type=float, default=None, help="audio seconds per UTC day")
    keys.add_argument("--voices", default=None, help="comma-separated voice ids the key may use (default: all)")
    keys.set_defaults(func=_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

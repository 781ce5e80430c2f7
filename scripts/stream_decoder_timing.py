"""The bundled voice's decoder, three ways, side by side in one process: CPU per audio second.

    python scripts/stream_decoder_timing.py [--windows 16 24 32 64 128] [--block-rates none 64 8 1]

One utterance's latent frames are decoded one-shot, by windows with ``context_frames`` either
side (``voice.decode_window``), and through the streaming decoder (``stream_graph``) built with
each ``--block-rates`` value (``none``: every convolution carries its own state), all on one
thread.  The ways alternate within each round, so drift on a shared machine hits all alike;
it prints the median over ``--rounds`` (the first two dropped as warm-up) in milliseconds of
CPU per second of audio, and exits with status 1 if a streamed decode differs from the
one-shot one by more than float rounding (100 dB).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
from streamvox.bench.harness import snr_db, thread_cpu_s
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.graph import Z_OUTPUT, split_piper_graph
from streamvox.engine.backends.piper.stream_decoder import StreamingDecoder
from streamvox.engine.backends.piper.stream_graph import streaming_decoder
from streamvox.engine.backends.piper.voice import HOP_LENGTH, PiperVoice, _session_options

TEXT = (
    "Here is a short summary of the meeting: the budget was approved, and the launch moves to March. Hiring continues."
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, nargs="+", default=[16, 24, 32, 64, 128])
    parser.add_argument("--block-rates", nargs="+", default=["none", "64", "8", "1"])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    voice = PiperVoice.load(bundled_voice_path(), stream_decode=False)
    split = split_piper_graph(bundled_voice_path().read_bytes())
    one_thread = _session_options(1)
    decoders = {
        rate: StreamingDecoder(
            streaming_decoder(split.decoder, Z_OUTPUT, None if rate == "none" else int(rate)),
            Z_OUTPUT,
            one_thread,
            one_thread,
            split.has_speaker_input,
        )
        for rate in args.block_rates
    }
    front = voice.front(voice.text_to_ids(TEXT), np.random.default_rng(1))
    z = voice.flow(front.z_p, urgent=False)
    frames = z.shape[1]
    audio_s = frames * HOP_LENGTH / voice.sample_rate
    one_shot = voice.decode(z, urgent=False)
    context = WindowPlan().context_frames
    failed = False

    for window in args.windows:

        def windowed(window: int = window) -> None:
            for start in range(0, frames, window):
                voice.decode_window(z, start, min(frames, start + window), context, urgent=False)

        def streamed(decoder: StreamingDecoder, window: int = window) -> np.ndarray:
            stream, pieces = decoder.stream(), []
            for start in range(0, frames, window):
                end = min(frames, start + window)
                pieces.append(stream.feed(z[:, start:end], final=end == frames))
            return np.concatenate(pieces)

        for rate, decoder in decoders.items():
            out = streamed(decoder)
            snr = snr_db(one_shot, out) if out.shape == one_shot.shape else float("nan")
            if not snr >= 100:
                print(f"window {window}, blocks from {rate}: differs from one-shot ({snr:.1f} dB)")
                failed = True
        ways: dict[str, Callable[[], object]] = {
            "one-shot": lambda: voice.decode(z, urgent=False),
            "windowed": windowed,
            **{f"stream/{rate}": (lambda d=decoder: streamed(d)) for rate, decoder in decoders.items()},
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            for name, run in ways.items():
                times[name].append(1000 * thread_cpu_s(run))
        medians = {name: statistics.median(t[2:]) / audio_s for name, t in times.items()}
        row = "  ".join(f"{name} {ms:.2f}" for name, ms in medians.items())
        print(f"window {window:>4} frames ({frames}-frame utterance), ms CPU per audio s: {row}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

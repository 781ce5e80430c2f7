"""An earlier commit's streaming SoVITS vocoder against the working tree's, interleaved in one process.

    python scripts/ab_vocoder.py 672b978 [--tokens 100 300] [--repeats 5] [--threads 2]

``REV``'s ``engine/ar/token_vocoder.py`` and ``engine/backends/gpt_sovits/vits.py``
(``git show``, their ``streamvox`` imports pointed at ``REV``'s own copies) run
beside the installed ones.  Both get the same random v2-size s2 weights and
stream the same token sequences with the default chunk schedule, in fp32 and
with the bf16 HiFi-GAN, alternating utterance by utterance so drift on a shared
machine hits both alike.  The vocoder alone is timed (the tokens are given, as
if T2S had made them).  It prints, per precision and utterance length, the
median vocoder seconds per audio second (RTF) of each, the ratio before / now,
the first chunk's decode ms of each, and the SNR of the new audio against the
old; for the bf16 HiFi-GAN also each side's SNR against its own fp32 audio (a
change in how bf16 rounds moves the first SNR but must not lower the second).
Exit status 1 if the fp32 SNR of new against old is below ``--min-snr`` dB, or
if the new bf16 audio is more than ``--bf16-slack`` dB further from its fp32
than the old.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import ModuleType

import numpy as np
import torch
from rev_module import module_at, scratch_folder
from streamvox.bench.harness import snr_db
from streamvox.bench.random_voice import write_sovits_checkpoint
from streamvox.engine.ar import token_vocoder as current_vocoder
from streamvox.engine.backends.gpt_sovits import vits as current_vits


def _stream(
    vits: ModuleType,
    vocoder: ModuleType,
    decoder: object,
    tokens: list[int],
    phonemes: torch.Tensor,
    speaker: torch.Tensor,
) -> tuple[np.ndarray, float, float]:
    """One utterance streamed token by token: its audio, the vocoder's seconds, the first chunk's."""
    utterance = vits.UtteranceDecoder(decoder, phonemes.reshape(1, -1), speaker, 0.5, 7)
    streaming = vocoder.StreamingVocoder(utterance, vocoder.ChunkSchedule())
    pieces, spent, first = [], 0.0, None
    for token in tokens:
        streaming.add([token])
        while streaming.pending():
            started = time.perf_counter()
            pieces.append(streaming.decode())
            spent += time.perf_counter() - started
            first = spent if first is None else first
    started = time.perf_counter()
    pieces.append(streaming.finish())
    spent += time.perf_counter() - started
    return np.concatenate(pieces), spent, spent if first is None else first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--tokens", type=int, nargs="+", default=[100, 300], help="utterance lengths (tokens)")
    parser.add_argument("--repeats", type=int, default=5, help="timed utterances per side, length and precision")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--min-snr", type=float, default=40.0, help="lowest allowed fp32 SNR of now against before")
    parser.add_argument("--bf16-slack", type=float, default=3.0, help="allowed loss of bf16's SNR against fp32 (dB)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    failed = False
    with scratch_folder() as tmp:
        before_vits = module_at(args.rev, "engine/backends/gpt_sovits/vits.py", tmp)
        before_vocoder = module_at(args.rev, "engine/ar/token_vocoder.py", tmp)
        checkpoint = tmp / "s2.pth"
        write_sovits_checkpoint(checkpoint, current_vits.SoVITSConfig(), seed=0)
        gen = np.random.default_rng(1)
        phonemes = torch.tensor(gen.integers(0, 700, 60))
        rate = current_vits.SoVITSConfig().sampling_rate
        print(
            f"streaming SoVITS vocoder, {args.rev} (before) against the working tree (now), "
            f"{torch.get_num_threads()} threads, v2-size random weights"
        )
        print(
            "  HiFi-GAN  tokens  before RTF  now RTF  before/now  first chunk before / now ms  SNR now vs before"
            "  SNR vs fp32 before / now"
        )
        utterances = {count: gen.integers(0, 1024, count).tolist() for count in args.tokens}
        fp32_audio: dict[tuple[str, int], np.ndarray] = {}
        for bf16 in (False, True):
            sides = {
                name: (vits, vocoder, vits.SoVITSDecoder.load(checkpoint, bf16_vocoder=bf16))
                for name, vits, vocoder in (
                    ("before", before_vits, before_vocoder),
                    ("now", current_vits, current_vocoder),
                )
            }
            t = np.arange(3 * rate) / rate
            reference = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
            for count, tokens in utterances.items():
                rtf: dict[str, list[float]] = {"before": [], "now": []}
                first: dict[str, list[float]] = {"before": [], "now": []}
                audio: dict[str, np.ndarray] = {}
                for repeat in range(args.repeats + 1):  # the first round sets up each shape, untimed
                    for name, (vits, vocoder, decoder) in sides.items():
                        speaker = decoder.speaker(decoder.reference_spectrogram(reference))
                        audio[name], spent, first_s = _stream(vits, vocoder, decoder, tokens, phonemes, speaker)
                        if repeat:
                            rtf[name].append(spent / (len(audio[name]) / rate))
                            first[name].append(1000 * first_s)
                snr = snr_db(audio["before"], audio["now"])
                against_fp32 = ""
                if bf16:
                    before_fp32, now_fp32 = (snr_db(fp32_audio[(n, count)], audio[n]) for n in ("before", "now"))
                    failed |= now_fp32 < before_fp32 - args.bf16_slack
                    against_fp32 = f" {before_fp32:>14.1f} / {now_fp32:.1f} dB"
                else:
                    failed |= snr < args.min_snr
                    fp32_audio.update({(name, count): audio[name] for name in audio})
                med = {name: statistics.median(values) for name, values in rtf.items()}
                fmed = {name: statistics.median(values) for name, values in first.items()}
                print(
                    f"  {'bf16' if bf16 else 'fp32':<8} {count:>7} {med['before']:>11.3f} {med['now']:>8.3f}"
                    f" {med['before'] / med['now']:>11.2f} {fmed['before']:>18.0f} / {fmed['now']:<8.0f}"
                    f" {snr:>12.1f} dB{against_fp32}"
                )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

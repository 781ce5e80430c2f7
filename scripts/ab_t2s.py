"""An earlier commit's GPT-SoVITS T2S step against the working tree's, interleaved in one process.

    python scripts/ab_t2s.py b0eb554 [--int8] [--batches 1 4 16] [--steps 15]

``REV``'s ``engine/backends/gpt_sovits/t2s.py`` (``git show``) is loaded as a
module beside the installed one, its ``streamvox`` imports pointed at ``REV``'s
own copies of those modules.  Both decoders
get the same random v2-size weights, prefill the same prompt into every slot
and then step the same tokens, alternating step by step so drift on a shared
machine hits both alike.  It prints, per batch size, the median ms per step of
each, the ratio before / now, the prefill's, and the largest logit difference
of the first step (0 when the arithmetic is unchanged).  Exit status 1 if a
logit differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from rev_module import module_at, scratch_folder
from streamvox.bench.random_voice import write_t2s_checkpoint
from streamvox.engine.backends.gpt_sovits import t2s as current
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1

MODULE = "engine/backends/gpt_sovits/t2s.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--int8", action="store_true", help="int8 linear weights (default fp32)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per decoder and batch size")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed first-step logit difference")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    failed = False
    with scratch_folder() as tmp:
        before = module_at(args.rev, MODULE, tmp)
        checkpoint = tmp / "t2s.ckpt"
        write_t2s_checkpoint(checkpoint, current.T2SConfig(), seed=0)
        loaded = load_s1(checkpoint)
        cfg = current.T2SConfig.from_checkpoint(loaded.config)
        gen = torch.Generator().manual_seed(1)
        phonemes = torch.randint(0, cfg.phoneme_vocab, (60,), generator=gen)
        prompt = torch.randint(0, cfg.eos, (150,), generator=gen)
        weights = "int8" if args.int8 else "fp32"
        threads = torch.get_num_threads()
        print(f"T2S step, {weights}, {args.rev} (before) against the working tree (now), {threads} threads")
        print("  batch  before ms/step  now ms/step  before/now  prefill before/now  first-step logit diff")
        for batch in args.batches:
            decoders = {
                name: module.T2SDecoder(loaded.weights, module.T2SConfig(), slots=batch, max_len=400, int8=args.int8)
                for name, module in (("before", before), ("now", current))
            }
            prefill: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(2):
                for name, decoder in decoders.items():
                    for slot in range(batch):
                        started = time.perf_counter()
                        decoder.prefill(slot, phonemes, prompt)
                        prefill[name].append(time.perf_counter() - started)
            slots, tokens = torch.arange(batch), torch.randint(0, cfg.eos, (batch,), generator=gen)
            first = {name: decoder.step(slots, tokens) for name, decoder in decoders.items()}
            diff = float((first["before"] - first["now"]).abs().max())
            failed |= diff > args.tolerance
            steps: dict[str, list[float]] = {"before": [], "now": []}
            for _ in range(args.steps):
                for name, decoder in decoders.items():
                    started = time.perf_counter()
                    decoder.step(slots, tokens)
                    steps[name].append(time.perf_counter() - started)
            ms = {name: 1000 * statistics.median(times) for name, times in steps.items()}
            pre = {name: statistics.median(times) for name, times in prefill.items()}
            print(
                f"  {batch:>5} {ms['before']:>15.1f} {ms['now']:>12.1f} {ms['before'] / ms['now']:>11.2f}"
                f" {pre['before'] / pre['now']:>19.2f} {diff:>22.2e}"
            )
            del decoders
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

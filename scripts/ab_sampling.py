"""An earlier commit's token sampling against the working tree's, interleaved in one process.

    python scripts/ab_sampling.py 1e917f5 [--batches 1 4 16] [--steps 200]

``REV``'s ``engine/ar/generate.py`` (and its own ``sampler``) is loaded beside the
installed one.  Each side samples the same streams (seeded, GPT-SoVITS's default
settings, the same logits fed every step) for ``--steps`` steps at each batch size,
through its own loop: ``choose_all`` where the side has it, else ``choose`` per
stream.  Steps alternate between the sides, so drift on a shared machine hits both
alike.  It prints the median ms per step of each and the ratio, and exits with status 1
if any chosen token differs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import ModuleType
from typing import Any

import torch
from rev_module import module_at, scratch_folder
from streamvox.engine.ar import generate as current

VOCAB = 1025
EOS = 1024


def _streams(side: ModuleType, batch: int) -> list[Any]:
    params = side.SamplingParams()
    prompt = torch.randint(0, EOS, (150,), generator=torch.Generator().manual_seed(7))
    return [side.TokenStream.start(slot, torch.zeros(VOCAB), prompt, params, seed=slot) for slot in range(batch)]


def _sample(side: ModuleType, streams: list[Any], policy: Any) -> tuple[list[int | None], float]:
    started = time.perf_counter()
    if hasattr(side, "choose_all"):
        chosen = side.choose_all(streams, [policy] * len(streams))
    else:
        chosen = [None if s.done else side.choose(s, policy) for s in streams]
    return chosen, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=200, help="timed steps per side and batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    different = 0
    with scratch_folder() as folder:
        before = module_at(args.rev, "engine/ar/generate.py", folder)
        sides = {"before": before, "now": current}
        print(f"token sampling, {args.rev} against the working tree, {torch.get_num_threads()} threads")
        for batch in args.batches:
            streams = {name: _streams(side, batch) for name, side in sides.items()}
            policies = {name: side.EosPolicy(eos=EOS, max_steps=10**6) for name, side in sides.items()}
            seconds: dict[str, list[float]] = {name: [] for name in sides}
            feed = torch.Generator().manual_seed(batch)
            for step in range(args.steps + 10):
                logits = torch.randn(batch, VOCAB, generator=feed) * 3
                logits[:, EOS] = -1e4  # no stream ends, so every step samples the whole batch
                chosen = {}
                for name, side in sides.items():
                    for row, stream in enumerate(streams[name]):
                        stream.logits = logits[row].clone()
                    chosen[name], spent = _sample(side, streams[name], policies[name])
                    if step >= 10:  # the first steps warm up
                        seconds[name].append(spent)
                different += chosen["before"] != chosen["now"]
            ms = {name: 1000 * statistics.median(values) for name, values in seconds.items()}
            print(
                f"  batch {batch:2d}: before {ms['before']:.3f} ms/step, now {ms['now']:.3f}, "
                f"before / now {ms['before'] / ms['now']:.2f}"
            )
    print(f"steps with a different token: {different}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An earlier commit's prefill attention kernel (``engine/ar/cpu_attention.c``) against the installed one.

    python scripts/ab_prefix_attention.py 83a052d [--repeats 5] [--threads 2]

``REV``'s C file is compiled as ``scripts/ab_cpu_linear.py`` compiles its kernel and
loaded beside the installed build.  Both run :func:`prefix_attention` over a
GPT-SoVITS v2 prefill's shapes (text 60 + prompt 150 rows under the prefix-LM
mask, 16 heads of 32, one different ``qkv`` per each of 24 layers), alternating,
``--repeats`` times, 10 timed prefills each.  It prints the median ms per prefill
of each side and the ratio, and the largest output difference (0 when the
arithmetic is unchanged); exit status 1 if it exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from types import ModuleType

import torch
from rev_module import extension_at, interleaved_ms, kernel_swapped, scratch_folder
from streamvox.engine.ar import cpu_attention

LAYERS, HEADS, HIDDEN, TEXT, PROMPT = 24, 16, 512, 60, 150


def _prefill(kernel: ModuleType, layers: list[torch.Tensor], widths: torch.Tensor) -> list[torch.Tensor]:
    with kernel_swapped(cpu_attention, kernel):
        return [cpu_attention.prefix_attention(qkv, widths, HEADS) for qkv in layers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed output difference")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(TEXT + PROMPT, 3 * HIDDEN, generator=gen) for _ in range(LAYERS)]
    widths = torch.cat([torch.full((TEXT,), TEXT), torch.arange(TEXT + 1, TEXT + PROMPT + 1)])
    with scratch_folder() as folder:
        kernels = {
            "before": extension_at(args.rev, "engine/ar/cpu_attention.c", "_cpu_attention", folder),
            "now": cpu_attention._kernel,
        }
        outputs = {name: _prefill(kernel, layers, widths) for name, kernel in kernels.items()}
        worst = max(float((a - b).abs().max()) for a, b in zip(*outputs.values(), strict=True))
        runs = {name: functools.partial(_prefill, kernel, layers, widths) for name, kernel in kernels.items()}
        ms = interleaved_ms(runs, args.repeats, passes=10)
    print(
        f"prefill attention (v2: {TEXT} + {PROMPT} rows, {HEADS} heads, {LAYERS} layers), {args.rev} against the "
        f"installed build, {torch.get_num_threads()} threads"
    )
    print(f"  before {ms['before']:.2f} ms, now {ms['now']:.2f}, before / now {ms['before'] / ms['now']:.2f}")
    print(f"largest output difference: {worst:.3g}")
    return 1 if worst > args.tolerance else 0


if __name__ == "__main__":
    sys.exit(main())

"""An earlier commit's int8 linear kernel (``engine/ar/cpu_linear.c``) against the installed one.

    python scripts/ab_cpu_linear.py 1e917f5 [--rows 1 4 16] [--repeats 3] [--threads 2]

``REV``'s C file (``git show``) is compiled with the flags ``pyproject.toml`` gives
the extension (``gcc -O3 -fopenmp``) and loaded beside the installed build.  Each side
packs its own copy of the same random weights, GPT-SoVITS v2's 96 step linears (24
layers of 512 -> 1536, 512 -> 512, 512 -> 2048 with ReLU, 2048 -> 512: 75 MB in
int8, more than the last-level cache, as in a real step), and runs all of them at
each row count; the sides alternate, ``--repeats`` times, 30 timed passes each.  It
prints the median ms per pass of each side and the ratio, and the largest output
difference between the sides (0 when the arithmetic is unchanged).  Exit status 1 if
it exceeds ``--tolerance``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from types import ModuleType

import torch
from rev_module import extension_at, interleaved_ms, kernel_swapped, scratch_folder
from streamvox.engine.ar import cpu_linear

SHAPES = [(1536, 512, False), (512, 512, False), (2048, 512, True), (512, 2048, False)]
LAYERS = 24


class Side:
    """One kernel build with its own packed copy of the weights."""

    def __init__(self, kernel: ModuleType, weights: list[tuple[torch.Tensor, torch.Tensor, bool]]) -> None:
        self.kernel = kernel
        with kernel_swapped(cpu_linear, kernel):
            self.layers = [(cpu_linear.Int8Linear(w, b), relu) for w, b, relu in weights]

    def run(self, inputs: dict[int, torch.Tensor]) -> list[torch.Tensor]:
        with kernel_swapped(cpu_linear, self.kernel):
            return [linear(inputs[linear.in_features], relu=relu) for linear, relu in self.layers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed output difference")
    args = parser.parse_args()
    if not cpu_linear.fast_path():
        raise SystemExit("this CPU does not run the kernel's VNNI path (or it was not built)")
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    weights = [
        (torch.randn(out, inp, generator=gen) * 0.02, torch.randn(out, generator=gen) * 0.01, relu)
        for _ in range(LAYERS)
        for out, inp, relu in SHAPES
    ]
    with scratch_folder() as folder:
        before = extension_at(args.rev, "engine/ar/cpu_linear.c", "_cpu_linear", folder)
        sides = {"before": Side(before, weights), "now": Side(cpu_linear._kernel, weights)}
        print(f"int8 step linears, {args.rev} against the installed build, {torch.get_num_threads()} threads")
        worst = 0.0
        for rows in args.rows:
            inputs = {inp: torch.randn(rows, inp, generator=gen) for inp in {512, 2048}}
            outputs = {name: side.run(inputs) for name, side in sides.items()}
            worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(*outputs.values(), strict=True)))
            runs = {name: functools.partial(side.run, inputs) for name, side in sides.items()}
            ms = interleaved_ms(runs, args.repeats, passes=30, warm=3)
            print(
                f"  {rows:3d} rows: before {ms['before']:.3f} ms, now {ms['now']:.3f}, "
                f"before / now {ms['before'] / ms['now']:.2f}"
            )
        print(f"largest output difference: {worst:.3g}")
    return 1 if worst > args.tolerance else 0


if __name__ == "__main__":
    sys.exit(main())

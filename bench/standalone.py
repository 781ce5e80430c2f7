"""The benchmarks that run without the server's dependencies: their options and their entry point.

``bench ar-device`` and ``bench dia`` need only numpy, torch and (for Dia's
weights) safetensors, so they can run on a bare GPU machine, which has
neither libopus nor libsndfile (the server's configuration imports both)::

    python -m streamvox.bench.standalone ar-device --device cuda
    python -m streamvox.bench.standalone dia --device cuda --dtypes bfloat16

``streamvox bench ar-device`` and ``streamvox bench dia`` hand their options
here unparsed, so each is defined once, and the server never imports a
benchmark to build its parser.  What ``scripts/gpu_check.sh`` runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable


def ar_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``bench ar-device``: GPT-SoVITS's fixed-shape T2S step on a device."""
    parser.add_argument("--device", help="a torch device (default: cuda if there is one, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), help="T2S (default: bfloat16 on cuda)")
    parser.add_argument(
        "--modes",
        nargs="+",
        help="of variable, eager, compile, cuda-graph, compile+cuda-graph (default: every mode the device runs)",
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--tokens", type=int, default=200, help="tokens per stream")
    parser.add_argument("--check-batch", type=int, default=4, help="streams in the token check")
    parser.add_argument("--check-tokens", type=int, default=100, help="greedy steps in the token check")
    parser.add_argument("--text-len", type=int, default=60, help="phoneme ids in the prompt text")
    parser.add_argument("--prompt-len", type=int, default=150, help="semantic tokens of the reference audio")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--json-out", help="also write the JSON result to this file")


def dia_arguments(parser: argparse.ArgumentParser) -> None:
    """``bench dia``: Dia's decode step against the memory-bandwidth bound and transformers."""
    parser.add_argument("--size", choices=("real", "tiny"), default="real", help="Dia-1.6B's sizes, or a tiny model")
    parser.add_argument("--steps", type=int, default=8, help="decode steps timed per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help="requests per step (2 rows each)")
    parser.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16"), default=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", help="a torch device: cpu, cuda, cuda:N")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=("variable", "eager", "compile", "cuda-graph", "compile+cuda-graph"),
        default=["variable"],
        help="the decoder's steps: variable, or fixed-shape ones (each batch size loads its own voice)",
    )
    parser.add_argument(
        "--reference",
        default=".ref/transformers",
        help="transformers installed with --target (what scripts/setup.sh test does); '' to skip",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--json-out", help="also write the JSON result to this file")


BENCHES: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {
    "ar-device": (ar_device_arguments, "streamvox.bench.ar_device:run_ar_device_bench"),
    "dia": (dia_arguments, "streamvox.bench.dia:run_dia_bench"),
}


def main(name: str, argv: list[str], prog: str | None = None) -> int:
    """Parse ``argv`` for the bench ``name`` and run it."""
    add_arguments, target = BENCHES[name]
    parser = argparse.ArgumentParser(prog=prog or f"python -m streamvox.bench.standalone {name}")
    add_arguments(parser)
    args = parser.parse_args(argv)
    module, function = target.split(":")
    return int(getattr(importlib.import_module(module), function)(args))


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHES:
        raise SystemExit(f"usage: python -m streamvox.bench.standalone {{{','.join(BENCHES)}}} [options]")
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))

"""``streamvox bench ar-device``'s options and entry point, also runnable without the server's dependencies.

The CLI hands this bench its options unparsed, so they are defined once,
here.  ``python -m streamvox.bench.ar_device_cli`` needs only numpy and
torch: what ``scripts/gpu_check.sh`` runs on a bare GPU machine, which has
neither libopus nor libsndfile (the server's configuration imports both).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench's options."""
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


def main(argv: list[str] | None = None, prog: str = "python -m streamvox.bench.ar_device_cli") -> int:
    """Parse ``argv`` (default: the command line) and run the bench."""
    parser = argparse.ArgumentParser(
        prog=prog, description="GPT-SoVITS's fixed-shape T2S step on a device: eager, compiled, CUDA graph"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    from streamvox.bench.ar_device import run_ar_device_bench

    return run_ar_device_bench(args)


if __name__ == "__main__":
    raise SystemExit(main())

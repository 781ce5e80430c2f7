"""What this machine can do, measured in the run that divides by it.

A decode step of an autoregressive model reads every weight and every cached
key and value once, and multiplies each weight by each row of the batch, so
its floor is the larger of the bytes it reads divided by the memory bandwidth
and the multiply-adds it does divided by the matrix-multiply rate.  The benches
that report a step against that floor (``bench ar``, ``bench dia``) measure
both here, in the same run, because shared machines differ by 2x.
"""

from __future__ import annotations

import time
import warnings

import torch


def memory_bandwidth_gbs(size_bytes: int = 1 << 30, repeats: int = 5, device: str = "cpu") -> float:
    """Read bandwidth in GB/s: the best of ``repeats`` full reads (a sum, on torch's threads or the
    GPU) of a ``size_bytes`` float32 tensor on ``device``, far larger than any cache."""
    data = torch.ones(size_bytes // 4, device=device)
    best = float("inf")
    for _ in range(repeats + 1):  # the first read pays a GPU's kernel load
        synchronize(device)
        started = time.perf_counter()
        data.sum()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return size_bytes / best / 1e9


def synchronize(device: str | torch.device) -> None:
    """Wait for ``device``'s queued work (a GPU runs asynchronously; a CPU needs no wait)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gmacs(int8: bool, rows: int = 512, size: int = 2048, repeats: int = 5) -> float:
    """Multiply-adds per second (billions) of a large linear layer on torch's threads, the best of
    ``repeats``: ``rows`` inputs through a ``size`` x ``size`` weight, fp32 (``torch.mm``) or int8
    weights with dynamically quantised inputs (fbgemm, what ``T2SDecoder(int8=True)`` runs)."""
    x = torch.randn(rows, size)
    weight = torch.randn(size, size)
    if int8:
        scale = (weight.abs().amax(dim=1) / 127.0).double()
        with warnings.catch_warnings():  # torch marks quantised tensors deprecated; still supported
            warnings.simplefilter("ignore")
            quantized = torch.quantize_per_channel(weight, scale, torch.zeros(size, dtype=torch.long), 0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(quantized, None)

        def run() -> object:
            return torch.ops.quantized.linear_dynamic(x, packed)
    else:

        def run() -> object:
            return torch.mm(x, weight.T)

    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return rows * size * size / best / 1e9

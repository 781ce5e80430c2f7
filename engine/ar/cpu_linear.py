"""int8 linear layers on a CPU with AVX-512 VNNI (C: ``cpu_linear.c``), for a decode step's
few rows and a prefill's hundreds.

A decode step multiplies one row per stream by every weight matrix.  fbgemm's
dynamic int8 product, what torch runs, took 2.4 ms for GPT-SoVITS's 96 step
linears (75 MB) at one row on 2 cores and 4.9 ms at 16; :class:`Int8Linear`
packs each weight so one 64-byte load feeds 4 rows' VNNI sums, and takes 1.5
and 2.4 ms (1.5 ms is 75 MB read at about the machine's memory bandwidth).  A
210-row prefill's linears take 20 ms against fbgemm's 25 (about 800 GMAC/s).

Arithmetic: weights symmetric int8 per output, as torch's per-channel
quantisation makes them; each input row asymmetric u8 over its own range
(fbgemm takes one range for the whole call, so a row's result there depends on
the other rows of its batch; here it does not).  The extension is optional at
install, like the attention kernels: :func:`available` says whether it was
built, :func:`fast_path` whether this CPU runs it (else its portable C, for
tests only: callers use fbgemm there).
"""

from __future__ import annotations

import importlib

import torch

try:
    _kernel = importlib.import_module("streamvox.engine.ar._cpu_linear")
except ImportError:  # built optionally: no compiler at install time
    _kernel = None


def available() -> bool:
    """Whether the C kernel was built and imports."""
    return _kernel is not None


def fast_path() -> bool:
    """Whether this CPU runs the kernel's AVX-512 VNNI code (else its portable C)."""
    return _kernel is not None and bool(_kernel.fast_path())


def fits(weight: torch.Tensor) -> bool:
    """Whether a ``(out, in)`` weight has the shape the kernel takes: ``out`` a multiple of 64,
    ``in`` of 16."""
    return weight.dim() == 2 and weight.shape[0] % 64 == 0 and weight.shape[1] % 16 == 0 and weight.shape[0] > 0


class Int8Linear:
    """``x @ W.T + b`` (ReLU optional) with ``W`` packed as int8 for the kernel.

    Built once from a float32 ``weight`` ``(out, in)`` (see :func:`fits`) and ``bias`` ``(out,)``
    or ``None``; keeps only its packed copy (``out * in`` bytes), the per-output scales and column
    sums.  ``portable`` forces the plain-C path (tests).  Immutable after construction: calls may
    run concurrently from several threads, each on the calling thread's torch thread count with
    the GIL released.  Raises ``RuntimeError`` when the kernel was not built."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, portable: bool = False) -> None:
        if _kernel is None:
            raise RuntimeError("the int8 linear kernel was not built (no C compiler when streamvox was installed)")
        if weight.dtype != torch.float32 or weight.device.type != "cpu" or not fits(weight):
            raise ValueError(f"weight must be float32 (out, in) on the CPU, out % 64 == in % 16 == 0: {weight.shape}")
        self.out_features, self.in_features = weight.shape
        if bias is not None and (bias.dtype != torch.float32 or bias.shape != (self.out_features,)):
            raise ValueError(f"bias must be float32 ({self.out_features},)")
        weight = weight.detach().contiguous()
        self.packed = torch.empty(self.out_features * self.in_features, dtype=torch.int8)
        self.scales = torch.empty(self.out_features)
        self.column_sums = torch.empty(self.out_features, dtype=torch.int32)
        _kernel.pack(
            weight.data_ptr(),
            self.out_features,
            self.in_features,
            self.packed.data_ptr(),
            self.scales.data_ptr(),
            self.column_sums.data_ptr(),
        )
        self.bias = None if bias is None else bias.detach().contiguous()
        self._portable = int(portable)

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        """``x`` ``(rows, in)`` float32 → ``(rows, out)`` float32, then ReLU if ``relu``."""
        if x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must be float32 (rows, {self.in_features}), got {x.dtype} {tuple(x.shape)}")
        x = x.contiguous()
        out = torch.empty(x.shape[0], self.out_features)
        _kernel.linear(
            x.data_ptr(),
            x.shape[0],
            self.in_features,
            self.out_features,
            self.packed.data_ptr(),
            self.scales.data_ptr(),
            self.column_sums.data_ptr(),
            0 if self.bias is None else self.bias.data_ptr(),
            out.data_ptr(),
            int(relu),
            self._portable,
            torch.get_num_threads(),
        )
        return out

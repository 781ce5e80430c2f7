"""Fused attention kernels for AR decoders on a CPU (C): the decode step's and the prefill's.

A decode step's attention is one query per (stream, head) against that
stream's cached keys and values.  Torch runs it as batch x heads tiny matrix
products a layer, each a library call costing more than the bytes it reads: a
batch-16 GPT-SoVITS int8 step spent 18 of its 26 ms there, reading the fp32
cache at about 20 GB/s.  :class:`CacheAttention` (the kernel in
``cpu_attention.c``, built at install as ``_cpu_attention``) does each (stream,
head) in one pass: it writes the step's new key and value at the stream's
position, then scores, softmax and the weighted values over that stream's live
positions only, at about the machine's read bandwidth.

A prefill attends every row of a sequence to a prefix of it (GPT-SoVITS's
prefix-LM mask); torch's fused CPU kernel ran those 32-wide heads at about 35
GMAC/s.  :func:`prefix_attention` transposes each head's keys once into 16-key
blocks so a row's scores are broadcast multiply-adds with no horizontal sums.

The extension is optional at install (no C compiler: the package still
installs); :func:`available` says whether it was built, and a decoder falls back
to torch's products without it.  The test suite requires it.  Both kernels run
on the calling thread's torch thread count with the GIL released.
"""

from __future__ import annotations

import importlib

import torch

CACHE_TYPES = {torch.float32: 0, torch.bfloat16: 1}
"""The cache element types the kernel reads, and their codes in the C call."""

try:
    _kernel = importlib.import_module("streamvox.engine.ar._cpu_attention")
except ImportError:  # built optionally: no compiler at install time
    _kernel = None


def available() -> bool:
    """Whether the C kernel was built and imports."""
    return _kernel is not None


def fast_path(head_dim: int) -> bool:
    """Whether the kernel runs its AVX-512 code for heads of ``head_dim`` on this CPU (else portable C)."""
    return _kernel is not None and bool(_kernel.fast_path(head_dim))


def prefix_attention(qkv: torch.Tensor, widths: torch.Tensor, heads: int, portable: bool = False) -> torch.Tensor:
    """Attention of every row of a sequence over a prefix of it: row ``i`` over rows ``0 ..
    widths[i] - 1``.

    ``qkv`` is ``(length, 3 * hidden)`` float32, contiguous (queries, keys, values; ``heads``
    heads inside each); ``widths`` ``(length,)`` int64 with every width in ``1 .. length``.
    Returns ``(length, hidden)`` float32, the softmax scaled by ``head_dim ** -0.5``.
    ``portable`` forces the plain-C path (tests).  Reads only its arguments: thread-safe."""
    if _kernel is None:
        raise RuntimeError("the attention kernels were not built (no C compiler when streamvox was installed)")
    length = qkv.shape[0] if qkv.dim() == 2 else 0
    if heads < 1 or qkv.dtype != torch.float32 or length < 1 or qkv.shape[1] % (3 * heads) or not qkv.is_contiguous():
        raise ValueError(f"qkv must be contiguous float32 (length, 3 * hidden) for {heads} heads")
    if widths.dtype != torch.int64 or widths.shape != (length,) or not widths.is_contiguous():
        raise ValueError(f"widths must be one contiguous int64 per row ({length})")
    if int(widths.min()) < 1 or int(widths.max()) > length:
        raise ValueError(f"every width must be within 1..{length}")
    hidden = qkv.shape[1] // 3
    head_dim = hidden // heads
    out = torch.empty(length, hidden)
    _kernel.prefix_attention(
        qkv.data_ptr(),
        widths.data_ptr(),
        out.data_ptr(),
        length,
        heads,
        head_dim,
        head_dim**-0.5,
        int(portable),
        torch.get_num_threads(),
    )
    return out


class CacheAttention:
    """The kernel bound to a decoder's whole static cache, checked once: the step calls it once a layer.

    ``cache`` is ``(layers, 2, slots, heads, max_len, head_dim)``, contiguous on the CPU, float32 or
    bfloat16 (keys at index 0 of the second dimension, values at 1).  ``portable`` forces the
    plain-C path (tests).  Raises ``RuntimeError`` when the kernel was not built."""

    def __init__(self, cache: torch.Tensor, portable: bool = False) -> None:
        if _kernel is None:
            raise RuntimeError("the attention kernels were not built (no C compiler when streamvox was installed)")
        if cache.dim() != 6 or cache.shape[1] != 2 or cache.device.type != "cpu":
            raise ValueError("cache must be (layers, 2, slots, heads, max_len, head_dim) on the CPU")
        if cache.dtype not in CACHE_TYPES or not cache.is_contiguous():
            raise ValueError(f"cache must be contiguous float32 or bfloat16, got {cache.dtype}")
        self.cache = cache
        layers, _, self.slots, self.heads, self.max_len, self.head_dim = cache.shape
        self.hidden = self.heads * self.head_dim
        self._layer_bytes = cache[0].numel() * cache.element_size()
        self._base = cache.data_ptr()
        self._layers = layers
        self._type = CACHE_TYPES[cache.dtype]
        self._portable = int(portable)
        self._scale = self.head_dim**-0.5

    def check(self, slot_ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``slot_ids`` and ``positions`` can drive a step: contiguous
        int64 ``(batch,)``, slots distinct and in range, positions in ``0 .. max_len - 1``."""
        batch = slot_ids.shape[0] if slot_ids.dim() == 1 else -1
        for name, index in (("slot_ids", slot_ids), ("positions", positions)):
            if index.dtype != torch.int64 or index.shape != (batch,) or not index.is_contiguous():
                raise ValueError(f"{name} must be one contiguous int64 row per stream")
        if batch and (int(slot_ids.min()) < 0 or int(slot_ids.max()) >= self.slots):
            raise ValueError(f"a slot id is outside 0..{self.slots - 1}")
        if len(set(slot_ids.tolist())) != batch:
            raise ValueError("a slot was given twice in one step")
        if batch and (int(positions.min()) < 0 or int(positions.max()) >= self.max_len):
            raise ValueError(f"a position is outside 0..{self.max_len - 1}")

    def __call__(
        self, layer: int, qkv: torch.Tensor, slot_ids: torch.Tensor, positions: torch.Tensor, out: torch.Tensor
    ) -> torch.Tensor:
        """Write each row's new key and value into ``layer``'s cache and put its attention output in ``out``.

        ``qkv`` is ``(batch, 3 * hidden)`` float32 (queries, keys, values; heads inside each):
        row ``b`` writes at ``positions[b]`` of slot ``slot_ids[b]`` and attends over positions
        ``0 .. positions[b]`` of it, softmax scaled by ``head_dim ** -0.5``.  ``out`` is ``(batch,
        hidden)`` float32, contiguous.  ``slot_ids`` and ``positions`` must have passed :meth:`check`
        (once a step: this call re-checks only ``qkv``, ``out`` and ``layer``).  Runs on the calling
        thread's torch thread count with the GIL released.  Calls on different slots may run
        concurrently; two calls on one slot race."""
        batch = slot_ids.shape[0]
        if not 0 <= layer < self._layers:
            raise ValueError(f"layer {layer} is outside 0..{self._layers - 1}")
        if qkv.dtype != torch.float32 or qkv.shape != (batch, 3 * self.hidden) or not qkv.is_contiguous():
            raise ValueError(f"qkv must be contiguous float32 ({batch}, {3 * self.hidden}), got {tuple(qkv.shape)}")
        if out.dtype != torch.float32 or out.shape != (batch, self.hidden) or not out.is_contiguous():
            raise ValueError(f"out must be contiguous float32 ({batch}, {self.hidden})")
        _kernel.decode_attention(
            qkv.data_ptr(),
            self._base + layer * self._layer_bytes,
            slot_ids.data_ptr(),
            positions.data_ptr(),
            out.data_ptr(),
            batch,
            self.heads,
            self.head_dim,
            self.slots,
            self.max_len,
            self._scale,
            self._type,
            self._portable,
            torch.get_num_threads(),
        )
        return out

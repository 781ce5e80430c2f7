"""Fused attention kernels for AR decoders on a CPU (C): the decode step's and the prefill's.

A decode step's attention is one query per (stream, head) against that
stream's cached keys and values.  Torch runs it as batch x heads tiny matrix
products a layer, each a library call costing more than the bytes it reads: a
batch-16 GPT-SoVITS int8 step spent 18 of its 26 ms there, reading the fp32
cache at about 20 GB/s.  :class:`CacheAttention` (the kernel in
``cpu_attention.c``, built at install as ``_cpu_attention``) does each (stream,
head) in one pass: it writes the step's new key and value at the stream's
position, then scores, softmax and the weighted values over that stream's live
positions only, at about the machine's read bandwidth.  The cache may hold
float32, bfloat16 or int8 (a scale per row; integer scores and value sums on
AVX-512 VNNI, and the next rows prefetched: a batch-16 step's attention 2.3 ms
against 4.6 in bf16 and 6.8 in fp32, measured alone on 2 cores).

A prefill attends every row of a sequence to a prefix of it (GPT-SoVITS's
prefix-LM mask); torch's fused CPU kernel ran those 32-wide heads at about 35
GMAC/s.  :func:`prefix_attention` transposes each head's keys once into 16-key
blocks so a row's scores are broadcast multiply-adds with no horizontal sums, and
for 32-wide heads takes four rows at a time, each key and value loaded once for
the four (a v2 prefill of 210 rows: 5.1 ms over its 24 layers on 2 cores
against 9.2 one row at a time, the same bits).

The extension is optional at install (no C compiler: the package still
installs); :func:`available` says whether it was built, and a decoder falls back
to torch's products without it.  The test suite requires it.  Both kernels run
on the calling thread's torch thread count with the GIL released.
"""

from __future__ import annotations

import importlib

import torch

CACHE_TYPES = {torch.float32: 0, torch.bfloat16: 1, torch.int8: 2}
"""The cache element types the kernel reads, and their codes in the C call."""

try:
    _kernel = importlib.import_module("streamvox.engine.ar._cpu_attention")
except ImportError:  # built optionally: no compiler at install time
    _kernel = None


def available() -> bool:
    """Whether the C kernel was built and imports."""
    return _kernel is not None


def fast_path(head_dim: int, cache_dtype: torch.dtype = torch.float32) -> bool:
    """Whether the kernel runs its AVX-512 code for heads of ``head_dim`` over a ``cache_dtype`` cache
    on this CPU (else portable C); an int8 cache's also needs AVX-512 BW and VNNI."""
    return _kernel is not None and bool(_kernel.fast_path(head_dim, CACHE_TYPES[cache_dtype]))


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

    ``cache`` is ``(layers, 2, slots, heads, max_len, head_dim)``, contiguous on the CPU, float32,
    bfloat16 or int8 (keys at index 0 of the second dimension, values at 1).  An int8 cache takes
    ``scales``, ``(layers, 2, slots, heads, max_len)`` float32 contiguous, one per row of
    ``head_dim``; its ``max_len`` must be a multiple of 16 and ``head_dim`` of 4 (at most 256).
    Its rows are the kernel's own (``cpu_attention.c``: keys in 16-position blocks, plus 128,
    values in position pairs):
    write them with :meth:`store`, read them back with :meth:`stored`.  ``portable`` forces the
    plain-C path (tests).  Raises ``RuntimeError`` when the kernel was not built."""

    def __init__(self, cache: torch.Tensor, portable: bool = False, scales: torch.Tensor | None = None) -> None:
        if _kernel is None:
            raise RuntimeError("the attention kernels were not built (no C compiler when streamvox was installed)")
        if cache.dim() != 6 or cache.shape[1] != 2 or cache.device.type != "cpu":
            raise ValueError("cache must be (layers, 2, slots, heads, max_len, head_dim) on the CPU")
        if cache.dtype not in CACHE_TYPES or not cache.is_contiguous():
            raise ValueError(f"cache must be contiguous float32, bfloat16 or int8, got {cache.dtype}")
        if (cache.dtype == torch.int8) != (scales is not None):
            raise ValueError("an int8 cache needs its row scales, and only an int8 cache takes them")
        if scales is not None and (
            scales.dtype != torch.float32
            or scales.shape != cache.shape[:-1]
            or not scales.is_contiguous()
            or scales.device.type != "cpu"
        ):
            raise ValueError(f"scales must be contiguous float32 {tuple(cache.shape[:-1])} on the CPU")
        self.cache = cache
        self.scales = scales
        layers, _, self.slots, self.heads, self.max_len, self.head_dim = cache.shape
        if scales is not None and (self.max_len % 16 or self.head_dim % 4 or self.head_dim > 256):
            raise ValueError("an int8 cache needs max_len a multiple of 16 and head_dim a multiple of 4, at most 256")
        self.hidden = self.heads * self.head_dim
        self._layer_bytes = cache[0].numel() * cache.element_size()
        self._base = cache.data_ptr()
        self._scales_base = 0 if scales is None else scales.data_ptr()
        self._scales_layer_bytes = 0 if scales is None else scales[0].numel() * scales.element_size()
        self._layers = layers
        self._type = CACHE_TYPES[cache.dtype]
        self._portable = int(portable)
        self._scale = self.head_dim**-0.5

    def store(self, layer: int, kind: int, slot: int, rows: torch.Tensor) -> None:
        """Write ``rows`` (``(count, hidden)`` float32, each row's elements contiguous, e.g. a slice of
        a prefill's qkv) into positions ``0 .. count - 1`` of ``slot``'s keys (``kind`` 0) or
        values (1) in ``layer``: as they are, rounded to bfloat16, or quantised as the step
        quantises its own.  Writes only that slot's rows: callers on other slots may run at once."""
        count = rows.shape[0] if rows.dim() == 2 else -1
        self._check_place(layer, kind, slot)
        shaped = 0 <= count <= self.max_len and rows.shape[-1] == self.hidden and rows.stride(-1) == 1
        if rows.dtype != torch.float32 or not shaped:
            raise ValueError(f"rows must be float32 (count <= {self.max_len}, {self.hidden}), each row contiguous")
        if self.scales is None:
            self.cache[layer, kind, slot, :, :count] = rows.view(count, self.heads, self.head_dim).transpose(0, 1)
            return
        _kernel.store_rows(
            rows.data_ptr(),
            rows.stride(0),
            count,
            self._base + layer * self._layer_bytes,
            self._scales_base + layer * self._scales_layer_bytes,
            kind,
            slot,
            0,
            self.heads,
            self.head_dim,
            self.slots,
            self.max_len,
            torch.get_num_threads(),
        )

    def stored(self, layer: int, kind: int, slot: int, count: int) -> torch.Tensor:
        """What the cache holds at positions ``0 .. count - 1`` of ``slot``'s keys (``kind`` 0) or
        values (1) in ``layer``, as float32 ``(heads, count, head_dim)``; an int8 cache's rows
        times their scales."""
        self._check_place(layer, kind, slot)
        if not 0 <= count <= self.max_len:
            raise ValueError(f"count must be within 0..{self.max_len}")
        if self.scales is None:
            return self.cache[layer, kind, slot, :, :count].float()
        raw = self.cache[layer, kind, slot]
        scales = self.scales[layer, kind, slot, :, :count, None]
        if kind == 1:  # position pairs, [head_dim][2] each
            pairs = raw.reshape(self.heads, self.max_len // 2, self.head_dim, 2)
            return pairs.transpose(2, 3).reshape(self.heads, self.max_len, self.head_dim)[:, :count].float() * scales
        # 16-position blocks, [head_dim / 4][16][4] each, plus 128
        blocks = raw.reshape(self.heads, self.max_len // 16, self.head_dim // 4, 16, 4).view(torch.uint8)
        keys = blocks.permute(0, 1, 3, 2, 4).reshape(self.heads, self.max_len, self.head_dim)
        return (keys[:, :count].float() - 128.0) * scales

    def _check_place(self, layer: int, kind: int, slot: int) -> None:
        """Raise ``ValueError`` unless ``layer``, ``kind`` (0 keys, 1 values) and ``slot`` name rows of this cache."""
        if kind not in (0, 1) or not 0 <= slot < self.slots or not 0 <= layer < self._layers:
            raise ValueError(f"no kind {kind}, slot {slot} or layer {layer} in this cache")

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
            self._scales_base and self._scales_base + layer * self._scales_layer_bytes,
        )
        return out

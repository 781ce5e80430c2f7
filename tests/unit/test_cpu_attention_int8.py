"""The decode-attention kernel over an int8 cache (engine/ar/cpu_attention.c) against torch's attention
over the same rows dequantised, and its writes against a quantisation written here in torch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamvox.engine.ar import cpu_attention
from streamvox.engine.ar.cpu_attention import CacheAttention


def quantized(rows: torch.Tensor) -> torch.Tensor:
    """What an int8 cache should hold for float32 ``rows`` (``(..., head_dim)``), dequantised: per
    row, the largest magnitude maps to 127, values round to nearest even, and the row is its int8
    values times largest / 127; a row with a NaN or an infinity, or all zeros, is zeros."""
    top = rows.abs().amax(dim=-1, keepdim=True)
    finite = torch.isfinite(rows).all(dim=-1, keepdim=True) & (top > 0)
    safe = torch.where(finite, top, torch.ones_like(top))
    inverse = torch.tensor(127.0) / safe  # float32 division, as the kernel divides
    values = torch.round(torch.where(finite, rows, 0.0) * inverse).clamp(-127, 127)
    return torch.where(finite, values * (safe / 127.0), 0.0)


def int8_cache(layers: int, slots: int, heads: int, max_len: int, head_dim: int, portable: bool = False):
    cache = torch.zeros(layers, 2, slots, heads, max_len, head_dim, dtype=torch.int8)
    return CacheAttention(cache, portable=portable, scales=torch.zeros(cache.shape[:-1]))


def fill(attention: CacheAttention, seed: int) -> torch.Tensor:
    """Every slot of every layer filled through ``store`` with random rows; returns them as float32
    ``(layers, 2, slots, heads, max_len, head_dim)``."""
    generator = torch.Generator().manual_seed(seed)
    layers = attention.cache.shape[0]
    rows = 3 * torch.randn(layers, 2, attention.slots, attention.max_len, attention.hidden, generator=generator)
    for layer in range(layers):
        for kind in range(2):
            for slot in range(attention.slots):
                attention.store(layer, kind, slot, rows[layer, kind, slot])
    return rows.view(layers, 2, attention.slots, attention.max_len, attention.heads, -1).transpose(3, 4)


def step(attention: CacheAttention, layer: int, qkv: torch.Tensor, slots: list[int], positions: list[int]):
    slot_ids, at = torch.tensor(slots), torch.tensor(positions)
    attention.check(slot_ids, at)
    return attention(layer, qkv, slot_ids, at, torch.empty(len(slots), attention.hidden))


def reference(attention: CacheAttention, layer: int, qkv: torch.Tensor, slots: list[int], positions: list[int]):
    """Torch's attention over what the cache holds after the step (read back with ``stored``)."""
    hidden, heads = attention.hidden, attention.heads
    rows = []
    for b, (slot, position) in enumerate(zip(slots, positions, strict=True)):
        keys = attention.stored(layer, 0, slot, position + 1)
        values = attention.stored(layer, 1, slot, position + 1)
        query = qkv[b, :hidden].view(heads, 1, -1)
        rows.append(F.scaled_dot_product_attention(query, keys, values).reshape(hidden))
    return torch.stack(rows)


def test_the_fast_path_needs_vnni() -> None:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    has = all(re.search(rf"\b{flag}\b", flags) for flag in ("avx512f", "avx512bw", "avx512_vnni"))
    assert cpu_attention.fast_path(32, torch.int8) == has
    assert not cpu_attention.fast_path(24, torch.int8)


@pytest.mark.parametrize("head_dim", [32, 64, 16, 24])
def test_stored_rows_are_the_quantised_rows(head_dim: int) -> None:
    attention = int8_cache(2, 2, 3, 48, head_dim)
    rows = fill(attention, seed=head_dim)
    for layer in range(2):
        for kind in range(2):
            for slot in range(2):
                got = attention.stored(layer, kind, slot, 48)
                assert torch.equal(got, quantized(rows[layer, kind, slot]))


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("head_dim", [32, 64, 16, 24])
def test_matches_torch_attention_over_the_stored_rows(portable: bool, head_dim: int) -> None:
    heads, slots, max_len = 4, 5, 80
    attention = int8_cache(2, slots, heads, max_len, head_dim, portable=portable)
    fill(attention, seed=1)
    before = [attention.stored(1, kind, slot, max_len) for kind in range(2) for slot in range(slots)]
    # widths 1, 3, 17, 64 and 80: a first token, partial and whole key blocks, an odd value pair
    rows = [(4, 0), (0, 2), (2, 16), (3, 63), (1, 79)]
    slot_ids, positions = [s for s, _ in rows], [p for _, p in rows]
    qkv = 2 * torch.randn(len(rows), 3 * heads * head_dim, generator=torch.Generator().manual_seed(2))
    got = step(attention, 1, qkv, slot_ids, positions)
    # the query is split into two int8 parts (about 15 bits) and the value weights are int16 (the
    # largest 32767): the kernel is within 3e-4 of the output's scale of float arithmetic over the
    # same stored rows (storing them in int8 moves the output by about 1e-2)
    want = reference(attention, 1, qkv, slot_ids, positions)
    assert float((got - want).abs().max()) <= 3e-4 * float(want.abs().max())
    # each row's new key and value are written, quantised, at its position, and nothing else moves
    hidden = heads * head_dim
    for b, (slot, position) in enumerate(rows):
        for kind, part in ((0, qkv[b, hidden : 2 * hidden]), (1, qkv[b, 2 * hidden :])):
            expected = before[kind * slots + slot].clone()
            expected[:, position] = quantized(part.view(heads, head_dim))
            assert torch.equal(attention.stored(1, kind, slot, max_len), expected)


def test_fast_and_portable_paths_agree() -> None:
    if not cpu_attention.fast_path(32, torch.int8):
        pytest.skip("no AVX-512 VNNI on this CPU: only the portable path runs")
    results = []
    qkv = torch.randn(6, 3 * 8 * 32, generator=torch.Generator().manual_seed(3))
    for portable in (False, True):
        attention = int8_cache(1, 6, 8, 320, 32, portable=portable)
        fill(attention, seed=4)
        results.append(step(attention, 0, qkv, list(range(6)), [319, 0, 100, 257, 31, 200]))
        results.append(attention.cache.clone())
    torch.testing.assert_close(results[0], results[2], rtol=1e-6, atol=1e-6)
    assert torch.equal(results[1], results[3])  # the same bytes written


def test_a_long_cache_is_summed_without_overflow() -> None:
    """2 000 positions of the largest values with equal weights: the int32 pair sums are flushed
    before they can overflow, so the output is the values' mean."""
    attention = int8_cache(1, 1, 1, 2048, 32)
    keys = torch.ones(2048, 32)
    values = torch.full((2048, 32), 5.0)
    attention.store(0, 0, 0, keys)
    attention.store(0, 1, 0, values)
    qkv = torch.cat([torch.ones(32), torch.ones(32), torch.full((32,), 5.0)]).view(1, -1)
    got = step(attention, 0, qkv, [0], [1999])
    torch.testing.assert_close(got, torch.full((1, 32), 5.0), rtol=1e-5, atol=1e-5)


def test_a_non_finite_row_is_stored_as_zeros() -> None:
    attention = int8_cache(1, 1, 2, 16, 32)
    rows = torch.randn(3, 64)
    rows[1, 5] = float("nan")
    rows[2, 40] = float("inf")
    attention.store(0, 0, 0, rows)
    stored = attention.stored(0, 0, 0, 3)
    assert torch.equal(stored[0, 1], torch.zeros(32)) and torch.equal(stored[1, 2], torch.zeros(32))
    assert torch.equal(stored[1, 1], quantized(rows[1, 32:]))  # the other head of that row is kept


def test_thread_count_does_not_change_the_result() -> None:
    qkv = torch.randn(6, 3 * 16 * 32, generator=torch.Generator().manual_seed(5))
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            attention = int8_cache(1, 6, 16, 64, 32)
            fill(attention, seed=6)
            results.append(step(attention, 0, qkv, list(range(6)), [49, 3, 20, 7, 31, 0]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


def test_bad_int8_caches_and_rows_are_refused() -> None:
    cache = torch.zeros(1, 2, 1, 2, 32, 32, dtype=torch.int8)
    with pytest.raises(ValueError, match="row scales"):
        CacheAttention(cache)
    with pytest.raises(ValueError, match="row scales"):
        CacheAttention(cache.float(), scales=torch.zeros(cache.shape[:-1]))
    with pytest.raises(ValueError, match="scales must be"):
        CacheAttention(cache, scales=torch.zeros(1, 2, 1, 2, 31))
    with pytest.raises(ValueError, match="multiple of 16"):
        CacheAttention(torch.zeros(1, 2, 1, 2, 40, 32, dtype=torch.int8), scales=torch.zeros(1, 2, 1, 2, 40))
    with pytest.raises(ValueError, match="multiple of 4"):
        CacheAttention(torch.zeros(1, 2, 1, 2, 32, 30, dtype=torch.int8), scales=torch.zeros(1, 2, 1, 2, 32))
    attention = CacheAttention(cache, scales=torch.zeros(cache.shape[:-1]))
    with pytest.raises(ValueError, match="rows must be"):
        attention.store(0, 0, 0, torch.zeros(33, 64))  # past max_len
    with pytest.raises(ValueError, match="rows must be"):
        attention.store(0, 0, 0, torch.zeros(4, 128)[:, ::2])  # elements not contiguous
    with pytest.raises(ValueError, match="rows must be"):
        attention.store(0, 0, 0, torch.zeros(64))  # one row, not a (count, hidden) block
    with pytest.raises(ValueError, match="count must be"):
        attention.stored(0, 0, 0, 33)
    with pytest.raises(ValueError, match="no kind"):
        attention.store(0, 2, 0, torch.zeros(4, 64))
    with pytest.raises(ValueError, match="no kind"):
        attention.store(0, 0, 1, torch.zeros(4, 64))

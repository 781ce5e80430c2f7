"""The fused attention kernels (engine/ar/cpu_attention.c) against torch's own attention."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamvox.engine.ar import cpu_attention
from streamvox.engine.ar.cpu_attention import CacheAttention, prefix_attention


def reference(
    cache: torch.Tensor, layer: int, qkv: torch.Tensor, slots: list[int], positions: list[int]
) -> torch.Tensor:
    """Per row: the new key and value in a float32 copy of its slot's cache, then softmax attention
    over positions 0..position with torch's scaled_dot_product_attention."""
    _, _, _, heads, _, head_dim = cache.shape
    hidden = heads * head_dim
    rows = []
    for b, (slot, position) in enumerate(zip(slots, positions, strict=True)):
        keys = cache[layer, 0, slot, :, : position + 1].float().clone()
        values = cache[layer, 1, slot, :, : position + 1].float().clone()
        keys[:, position] = qkv[b, hidden : 2 * hidden].view(heads, head_dim).to(cache.dtype).float()
        values[:, position] = qkv[b, 2 * hidden :].view(heads, head_dim).to(cache.dtype).float()
        query = qkv[b, :hidden].view(heads, 1, head_dim)
        rows.append(F.scaled_dot_product_attention(query, keys, values).reshape(hidden))
    return torch.stack(rows)


def make_cache(layers: int, slots: int, heads: int, max_len: int, head_dim: int, dtype: torch.dtype) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return (3 * torch.randn(layers, 2, slots, heads, max_len, head_dim, generator=generator)).to(dtype)


def run(
    attention: CacheAttention, layer: int, qkv: torch.Tensor, slots: list[int], positions: list[int]
) -> torch.Tensor:
    slot_ids, at = torch.tensor(slots), torch.tensor(positions)
    attention.check(slot_ids, at)
    out = torch.empty(len(slots), attention.hidden)
    return attention(layer, qkv, slot_ids, at, out)


def test_the_kernel_is_built() -> None:
    """The suite needs the compiled kernel: without it the decoders silently fall back to torch."""
    assert cpu_attention.available()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("head_dim", [32, 64, 24])
def test_matches_torch_attention(dtype: torch.dtype, portable: bool, head_dim: int) -> None:
    heads, slots, max_len = 4, 5, 80
    cache = make_cache(2, slots, heads, max_len, head_dim, dtype)
    expected_cache = cache.clone()
    attention = CacheAttention(cache, portable=portable)
    # widths 1 (a first token), 3, 17, 64 and 80 cover the 4-row and 16-lane tails
    rows = [(4, 0), (0, 2), (2, 16), (3, 63), (1, 79)]
    slot_ids, positions = [s for s, _ in rows], [p for _, p in rows]
    qkv = 2 * torch.randn(len(rows), 3 * heads * head_dim, generator=torch.Generator().manual_seed(2))
    want = reference(expected_cache, 1, qkv, slot_ids, positions)
    got = run(attention, 1, qkv, slot_ids, positions)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-4
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    # the new keys and values are written at each row's position (bf16 rounded as torch rounds),
    # and nothing else in the cache moves
    hidden = heads * head_dim
    for b, (slot, position) in enumerate(rows):
        expected_cache[1, 0, slot, :, position] = qkv[b, hidden : 2 * hidden].view(heads, head_dim).to(dtype)
        expected_cache[1, 1, slot, :, position] = qkv[b, 2 * hidden :].view(heads, head_dim).to(dtype)
    assert torch.equal(cache, expected_cache)


def test_fast_path_is_used_for_gpt_sovits_heads_on_an_avx512_cpu() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    assert cpu_attention.fast_path(32) == bool(re.search(r"\bavx512f\b", flags))
    assert not cpu_attention.fast_path(24)


def test_positions_past_a_row_are_never_read() -> None:
    """Attention covers 0..position only: NaN past it (stale or unwritten cache) changes nothing."""
    cache = make_cache(1, 2, 2, 40, 32, torch.float32)
    clean = cache.clone()
    cache[:, :, :, :, 10:] = float("nan")
    qkv = torch.randn(2, 3 * 64)
    got = run(CacheAttention(cache), 0, qkv, [0, 1], [9, 5])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, reference(clean, 0, qkv, [0, 1], [9, 5]), rtol=1e-5, atol=1e-5)


def test_thread_count_does_not_change_the_result() -> None:
    """Each (row, head) is computed by one thread, so one thread or two give the same bits."""
    qkv = torch.randn(6, 3 * 16 * 32, generator=torch.Generator().manual_seed(3))
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            cache = make_cache(1, 6, 16, 50, 32, torch.float32)
            results.append(run(CacheAttention(cache), 0, qkv, list(range(6)), [49, 3, 20, 7, 31, 0]))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


def test_calls_on_different_slots_run_concurrently() -> None:
    """The GIL is released; two threads on disjoint slots give what one thread gives."""
    cache = make_cache(1, 8, 4, 200, 32, torch.float32)
    alone_cache = cache.clone()
    qkv = [torch.randn(4, 3 * 128, generator=torch.Generator().manual_seed(s)) for s in (4, 5)]
    slots = [[0, 1, 2, 3], [4, 5, 6, 7]]
    positions = [150, 99, 180, 10]
    alone = [run(CacheAttention(alone_cache), 0, q, s, positions) for q, s in zip(qkv, slots, strict=True)]
    attention = CacheAttention(cache)
    together: list[torch.Tensor | None] = [None, None]

    def work(i: int) -> None:
        for _ in range(20):
            together[i] = run(attention, 0, qkv[i], slots[i], positions)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert torch.equal(together[0], alone[0]) and torch.equal(together[1], alone[1])


def test_bad_steps_are_refused() -> None:
    attention = CacheAttention(make_cache(2, 3, 2, 16, 32, torch.float32))
    with pytest.raises(ValueError, match="twice"):
        attention.check(torch.tensor([1, 1]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="slot id"):
        attention.check(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="position"):
        attention.check(torch.tensor([0]), torch.tensor([16]))
    with pytest.raises(ValueError, match="int64"):
        attention.check(torch.tensor([0], dtype=torch.int32), torch.tensor([0]))
    slot_ids, positions, out = torch.tensor([0]), torch.tensor([0]), torch.empty(1, 64)
    with pytest.raises(ValueError, match="qkv"):
        attention(0, torch.zeros(1, 64), slot_ids, positions, out)
    with pytest.raises(ValueError, match="qkv"):
        attention(0, torch.zeros(1, 6 * 64)[:, ::2], slot_ids, positions, out)
    with pytest.raises(ValueError, match="out"):
        attention(0, torch.zeros(1, 3 * 64), slot_ids, positions, torch.empty(1, 32))
    with pytest.raises(ValueError, match="layer"):
        attention(2, torch.zeros(1, 3 * 64), slot_ids, positions, out)
    with pytest.raises(ValueError, match="contiguous"):
        CacheAttention(make_cache(2, 3, 2, 16, 32, torch.float32).transpose(4, 5))
    with pytest.raises(ValueError, match="float32, bfloat16 or int8"):
        CacheAttention(torch.zeros(1, 2, 1, 1, 4, 4, dtype=torch.float16))


def prefix_lm_widths(text: int, audio: int) -> torch.Tensor:
    """GPT-SoVITS's prefill mask as prefix widths: text rows see the text, audio rows the text and
    the audio up to themselves."""
    return torch.tensor([text] * text + [text + a + 1 for a in range(audio)])


def prefix_reference(qkv: torch.Tensor, widths: torch.Tensor, heads: int) -> torch.Tensor:
    length, hidden = qkv.shape[0], qkv.shape[1] // 3
    q, k, v = (t.view(length, heads, -1).transpose(0, 1) for t in qkv.split(hidden, dim=1))
    keep = torch.arange(length).unsqueeze(0) < widths.unsqueeze(1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(0, 1).reshape(length, hidden)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize(("heads", "head_dim"), [(16, 32), (2, 64), (3, 24)])
@pytest.mark.parametrize("shape", ["prefix-lm", "random"])
def test_prefix_attention_matches_torch(portable: bool, heads: int, head_dim: int, shape: str) -> None:
    generator = torch.Generator().manual_seed(heads * head_dim)
    length = 37  # not a multiple of 16: the last key block is partial
    if shape == "prefix-lm":
        widths = prefix_lm_widths(9, length - 9)
    else:
        widths = torch.randint(1, length + 1, (length,), generator=generator)
    qkv = 2 * torch.randn(length, 3 * heads * head_dim, generator=generator)
    got = prefix_attention(qkv, widths, heads, portable=portable)
    torch.testing.assert_close(got, prefix_reference(qkv, widths, heads), rtol=1e-5, atol=1e-5)


def test_prefix_attention_is_the_same_on_one_thread_or_two() -> None:
    qkv = torch.randn(210, 3 * 512, generator=torch.Generator().manual_seed(11))
    widths = prefix_lm_widths(60, 150)
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(prefix_attention(qkv, widths, 16))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])


@pytest.mark.parametrize("widths", [[3, 1, 4, 2], [4, 4, 4, 4], [1, 2, 3, 4]])
def test_a_prefill_row_gets_the_same_bits_in_a_group_of_four_as_alone(widths: list[int]) -> None:
    """The fast path takes head_dim-32 rows four at a time and a tail alone: a row's result is the
    same bits either way (so a row does not depend on where it falls in the sequence)."""
    heads, hidden = 4, 128
    qkv = torch.randn(5, 3 * hidden, generator=torch.Generator().manual_seed(sum(widths)))
    grouped = prefix_attention(qkv, torch.tensor([*widths, 5]), heads)  # rows 0-3 as a group, 4 alone
    for row in range(4):
        moved = qkv.clone()
        moved[4, :hidden] = qkv[row, :hidden]  # row 4 asks row `row`'s question over the same prefix
        alone = prefix_attention(moved, torch.tensor([*widths, widths[row]]), heads)
        assert torch.equal(alone[4], grouped[row])


def test_prefix_attention_refuses_bad_input() -> None:
    qkv = torch.zeros(4, 3 * 64)
    with pytest.raises(ValueError, match="width"):
        prefix_attention(qkv, torch.tensor([1, 2, 3, 5]), 2)
    with pytest.raises(ValueError, match="width"):
        prefix_attention(qkv, torch.tensor([0, 2, 3, 4]), 2)
    with pytest.raises(ValueError, match="widths"):
        prefix_attention(qkv, torch.tensor([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="qkv"):
        prefix_attention(torch.zeros(4, 3 * 64, dtype=torch.float64), torch.tensor([1, 2, 3, 4]), 2)
    with pytest.raises(ValueError, match="qkv"):
        prefix_attention(torch.zeros(4, 100), torch.tensor([1, 2, 3, 4]), 2)
    with pytest.raises(ValueError, match="qkv"):
        prefix_attention(qkv, torch.tensor([1, 2, 3, 4]), 0)


def test_a_long_cache_is_attended_in_full() -> None:
    """40 000 positions (scores far past any stack buffer) give torch's attention."""
    cache = make_cache(1, 1, 2, 40_000, 32, torch.float32)
    qkv = torch.randn(1, 3 * 64, generator=torch.Generator().manual_seed(12))
    want = reference(cache.clone(), 0, qkv, [0], [39_999])
    torch.testing.assert_close(run(CacheAttention(cache), 0, qkv, [0], [39_999]), want, rtol=1e-5, atol=1e-5)

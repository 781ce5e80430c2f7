"""The T2S decoder's fp32 linear layer keeps one column block per thread, its int8 one runs on the
VNNI kernel where the CPU has it (fbgemm elsewhere), and the decoder's logits are the same however
many threads there are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamvox.bench.random_voice import write_t2s_checkpoint
from streamvox.engine.ar import cpu_linear
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder, _Linear


@pytest.fixture
def threads() -> Iterator[None]:
    """Tests set torch's thread count; it is put back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads_now", [1, 2, 3, 5])
def test_the_fp32_layer_keeps_one_block_per_thread_and_equals_a_plain_linear(threads: None, threads_now: int) -> None:
    torch.set_num_threads(threads_now)
    gen = torch.Generator().manual_seed(threads_now)
    weight, bias = torch.randn(96, 64, generator=gen), torch.randn(96, generator=gen)
    x = torch.randn(2, 7, 64, generator=gen)
    linear = _Linear(weight, bias, int8=False)
    assert linear.parts == {1: 1, 2: 2, 3: 3, 5: 4}[threads_now]  # the most blocks dividing 96
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(linear(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear.relu(x), F.relu(expected), rtol=1e-5, atol=1e-5)


def test_the_decoder_s_logits_do_not_depend_on_its_thread_count(threads: None, tmp_path: Path) -> None:
    cfg = T2SConfig.tiny()
    write_t2s_checkpoint(tmp_path / "tiny.ckpt", cfg, seed=3)
    weights = load_s1(tmp_path / "tiny.ckpt").weights
    phonemes, prompt = torch.arange(1, 9), torch.arange(3, 15)
    logits = []
    for count in (1, 2, 4):
        torch.set_num_threads(count)
        decoder = T2SDecoder(weights, cfg, slots=2, max_len=64)
        first = [decoder.prefill(slot, phonemes, prompt) for slot in range(2)]
        step = decoder.step(torch.arange(2), torch.tensor([5, 9]))
        logits.append(torch.cat([torch.stack(first), step]))
    for other in logits[1:]:
        torch.testing.assert_close(other, logits[0], rtol=1e-5, atol=1e-5)


def test_an_int8_layer_runs_every_row_count_on_the_vnni_kernel_and_keeps_no_fbgemm_copy() -> None:
    gen = torch.Generator().manual_seed(9)
    weight, bias = 0.05 * torch.randn(128, 64, generator=gen), 0.1 * torch.randn(128, generator=gen)
    linear = _Linear(weight, bias, int8=True)
    if not cpu_linear.fast_path():
        assert linear.vnni is None and linear.packed is not None  # fbgemm for every row count
        return
    assert linear.vnni is not None and linear.packed is None
    for rows in (1, 16, 17, 40, 210):
        x = torch.randn(rows, 64, generator=gen)
        assert torch.equal(linear(x), linear.vnni(x))
        assert torch.equal(linear.relu(x), linear.vnni(x, relu=True))
        torch.testing.assert_close(linear(x), F.linear(x, weight, bias), rtol=0.05, atol=0.05)
    batched = torch.randn(2, 7, 64, generator=gen)  # a prefill's (1, positions, in) and the like
    assert torch.equal(linear(batched), linear.vnni(batched.reshape(14, 64)).view(2, 7, 128))
    odd = _Linear(torch.randn(100, 64), torch.randn(100), int8=True)  # outputs not a multiple of 64
    assert odd.vnni is None and odd.packed is not None
    x = torch.randn(3, 64, generator=gen)
    assert torch.equal(odd.relu(x), torch.ops.quantized.linear_relu_dynamic(x, odd.packed))

"""The T2S decoder's fp32 linear layer: weights cut into per-thread column blocks must give
``x @ W.T + b`` for any number of rows and any thread count, and the same logits however many
threads there are."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamvox.bench.random_voice import write_t2s_checkpoint
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder, _Linear


@pytest.fixture
def threads() -> Iterator[None]:
    """Tests set torch's thread count; it is put back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(1, 64), (5, 64), (2, 7, 64)])
def test_blocked_linear_equals_a_plain_linear(threads: None, parts: int, shape: tuple[int, ...]) -> None:
    torch.set_num_threads(parts)
    gen = torch.Generator().manual_seed(parts)
    weight, bias = torch.randn(96, 64, generator=gen), torch.randn(96, generator=gen)
    x = torch.randn(*shape, generator=gen)
    linear = _Linear(weight, bias, int8=False)
    assert linear.parts == parts
    expected = F.linear(x, weight, bias)
    torch.testing.assert_close(linear(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(linear.relu(x), F.relu(expected), rtol=1e-5, atol=1e-5)


def test_an_uneven_split_falls_back_to_one_block(threads: None) -> None:
    torch.set_num_threads(5)
    assert _Linear(torch.randn(96, 8), torch.randn(96), int8=False).parts == 1
    torch.set_num_threads(4)
    assert _Linear(torch.randn(96, 8), torch.randn(96), int8=False).parts == 4


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

"""Column-blocked linear layers: equal to ``x @ W.T + b`` for any rows and block count, blocks
that always divide the output, and a module whose fp32 linears are swapped in place."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from streamvox.engine.ar.blocked_linear import (
    BlockedLinear,
    block_count,
    blocked_product,
    column_blocks,
    use_blocked_linears,
)
from torch import nn


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(1, 64), (5, 64), (2, 7, 64)])
def test_a_blocked_product_equals_a_plain_linear(parts: int, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(parts)
    weight, bias = torch.randn(96, 64, generator=gen), torch.randn(96, generator=gen)
    x = torch.randn(*shape, generator=gen)
    blocks = column_blocks(weight, parts)
    assert blocks.shape == (parts, 64, 96 // parts) and blocks.is_contiguous()
    torch.testing.assert_close(blocked_product(x, blocks, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(blocked_product(x, blocks), F.linear(x, weight), rtol=1e-5, atol=1e-5)


def test_a_row_s_result_does_not_depend_on_the_rows_beside_it() -> None:
    gen = torch.Generator().manual_seed(0)
    blocks = column_blocks(torch.randn(256, 128, generator=gen), 4)
    x = torch.randn(16, 128, generator=gen)
    together = blocked_product(x, blocks)
    alone = torch.cat([blocked_product(x[i : i + 1], blocks) for i in range(16)])
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-5)


def test_the_block_count_always_divides_the_output() -> None:
    assert block_count(96, 5) == 4 and block_count(96, 8) == 8 and block_count(9252, 8) == 6
    assert block_count(97, 4) == 1 and block_count(10, 0) == 1
    with pytest.raises(ValueError):
        column_blocks(torch.zeros(10, 4), 3)


def test_a_module_s_fp32_linears_are_swapped_and_give_the_same_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 12, bias=False), nn.Linear(12, 7))
    half = nn.Linear(16, 16).to(torch.bfloat16)
    x = torch.randn(3, 16)
    expected = model(x)
    assert use_blocked_linears(model, threads=2, blocks_per_thread=2) == 2  # 7 outputs do not split
    assert isinstance(model[0], BlockedLinear) and isinstance(model[2], BlockedLinear)
    assert isinstance(model[3], nn.Linear)
    assert model[0].blocks.shape == (4, 16, 8) and model[2].blocks.shape == (4, 32, 3)
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == 16 * 32 + 32 + 32 * 12 + 12 * 7 + 7
    assert use_blocked_linears(half, threads=2) == 0  # bf16 stays a plain product
    assert use_blocked_linears(nn.Linear(4, 4), threads=1) == 0


def test_skipped_submodules_keep_their_linears() -> None:
    model = nn.Module()
    model.encoder = nn.Sequential(nn.Linear(8, 8))
    model.decoder = nn.Sequential(nn.Linear(8, 8), nn.Sequential(nn.Linear(8, 4)))
    model.head = nn.Linear(8, 6)
    assert use_blocked_linears(model, threads=2, skip=("encoder",)) == 3
    assert isinstance(model.encoder[0], nn.Linear)
    assert all(isinstance(m, BlockedLinear) for m in (model.decoder[0], model.decoder[1][0], model.head))

"""Linear layers for decode steps: the weight cut by output columns into blocks, one batched product.

An autoregressive step multiplies a few rows (one per stream, two with
classifier-free guidance) by every weight matrix, so it is bound by reading
the weights.  MKL runs such a product on one thread (measured on 2 cores:
10-22 GB/s against 40-70 GB/s for a plain read).  Keeping ``W`` transposed and
cut by output columns into ``parts`` contiguous blocks ``(parts, in, out /
parts)`` (the same memory as ``W``) and running one batched product over the
blocks lets torch spread the blocks over its threads.  Each output element is
still one dot product over the whole input, so the result equals ``x @ W.T +
b``, and a row's result the same row alone, up to rounding (both tested).

fp32 only: bf16 batched products are slower on CPU than bf16 ``F.linear``
(measured), so bf16 weights stay plain.  Thread-safe for concurrent calls (the
blocks are read-only).
"""

from __future__ import annotations

import torch
from torch import nn


def block_count(out_features: int, wanted: int) -> int:
    """The largest count of equal column blocks, at most ``wanted``, that ``out_features`` splits into."""
    for parts in range(max(1, wanted), 0, -1):
        if out_features % parts == 0:
            return parts
    return 1


def column_blocks(weight: torch.Tensor, parts: int) -> torch.Tensor:
    """``weight`` ``(out, in)`` as ``(parts, in, out / parts)`` contiguous blocks of ``W.T``."""
    out_features, in_features = weight.shape
    if out_features % parts:
        raise ValueError(f"{out_features} output columns do not split into {parts} blocks")
    columns = out_features // parts
    return weight.detach().T.reshape(in_features, parts, columns).permute(1, 0, 2).contiguous()


def blocked_product(x: torch.Tensor, blocks: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ W.T (+ bias)`` for ``x`` ``(..., in)`` and ``blocks`` from :func:`column_blocks`."""
    parts, in_features, columns = blocks.shape
    flat = x.reshape(-1, in_features)
    stacked = flat.expand(parts, flat.shape[0], in_features)
    if bias is None:
        out = torch.bmm(stacked, blocks)
    else:
        out = torch.baddbmm(bias.reshape(parts, 1, columns), stacked, blocks)
    return out.permute(1, 0, 2).reshape(*x.shape[:-1], parts * columns)


class BlockedLinear(nn.Module):
    """An ``nn.Linear`` whose weight is kept as column blocks (see the module docstring).

    Built from a loaded ``nn.Linear`` by :func:`use_blocked_linears`; the original weight is not
    kept.  ``blocks`` is a parameter (without gradient), so a module's parameter count and bytes
    stay what they were."""

    def __init__(self, linear: nn.Linear, parts: int) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.blocks = nn.Parameter(column_blocks(linear.weight, parts), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blocked_product(x, self.blocks, self.bias)


def use_blocked_linears(
    module: nn.Module, threads: int | None = None, blocks_per_thread: int = 1, skip: tuple[str, ...] = ()
) -> int:
    """Replace every fp32 ``nn.Linear`` inside ``module`` by a :class:`BlockedLinear` with up to
    ``threads * blocks_per_thread`` blocks (``threads``: torch's count now), except those under
    a submodule whose qualified name starts with one of ``skip``.  Returns how many were
    replaced; none when that count is 1 (a plain product is as good)."""
    wanted = (threads or torch.get_num_threads()) * blocks_per_thread
    if wanted <= 1:
        return 0
    replaced = 0
    for parent_name, parent in list(module.named_modules()):
        for name, child in list(parent.named_children()):
            qualified = f"{parent_name}.{name}" if parent_name else name
            if any(qualified.startswith(prefix) for prefix in skip):
                continue
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.float32:
                parts = block_count(child.out_features, wanted)
                if parts > 1:
                    setattr(parent, name, BlockedLinear(child, parts))
                    replaced += 1
    return replaced

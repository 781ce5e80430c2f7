"""Dia weights from either layout: transformers' ``model.safetensors`` or nari-labs' ``.pth``.

The original checkpoint (nari-labs/dia, ``Dia.from_local``) is a torch pickle of
``DiaModel.state_dict()``: projections are ``DenseGeneral`` kernels shaped
``(in, heads, head_dim)`` / ``(heads, head_dim, out)``, the gated MLP is one
``(hidden, 2, ffn)`` kernel (gate first), the decoder has one embedding table
per channel and its head is a ``(hidden, channels, vocab)`` kernel under
``decoder.logits_dense``.  :func:`from_original` rewrites it into the
transformers layout our network loads; the pickle is read by the restricted
unpickler, so a checkpoint cannot run code.  Pure functions: thread-safe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from streamvox.engine.ar.checkpoint import CheckpointError, read_bytes, restricted_load
from streamvox.engine.backends.dia.config import DiaConfig

_PROJECTION = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(self_attention|cross_attention)\.([qkvo])_proj\.weight$")


def from_original(state: Mapping[str, torch.Tensor], config: DiaConfig) -> dict[str, torch.Tensor]:
    """The transformers-layout tensors of an original nari-labs state dict (``ValueError`` if it is not one)."""
    out: dict[str, torch.Tensor] = {}
    embeddings: dict[int, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise ValueError(f"entry {name!r} is not a named tensor")
        if name.endswith("rotary_emb.timescale"):
            continue
        if match := _PROJECTION.match(name):
            kind = match.group(4)
            kernel = tensor.reshape(tensor.shape[0], -1) if kind != "o" else tensor.reshape(-1, tensor.shape[-1])
            out[f"model.{name}"] = kernel.T.contiguous()
        elif name.endswith(".mlp.wi_fused.weight"):
            out["model." + name.replace(".wi_fused.", ".gate_up_proj.")] = tensor.reshape(
                tensor.shape[0], -1
            ).T.contiguous()
        elif name.endswith(".mlp.wo.weight"):
            out["model." + name.replace(".wo.", ".down_proj.")] = tensor.T.contiguous()
        elif match := re.match(r"^decoder\.embeddings\.(\d+)\.weight$", name):
            embeddings[int(match.group(1))] = tensor
        elif name == "decoder.logits_dense.weight":
            out["logits_dense.weight"] = tensor.reshape(tensor.shape[0], -1).T.contiguous()
        else:
            out[f"model.{name}"] = tensor
    channels = config.decoder.channels
    if sorted(embeddings) != list(range(channels)):
        raise ValueError(f"expected {channels} decoder embedding tables, found {sorted(embeddings)}")
    out["model.decoder.embeddings.embed.weight"] = torch.cat([embeddings[c] for c in range(channels)])
    return out


def read_original(path: Path, config: DiaConfig) -> dict[str, torch.Tensor]:
    """An original ``.pth`` through the restricted unpickler, in the transformers layout."""
    raw = restricted_load(read_bytes(path), path)
    if isinstance(raw, Mapping) and "model" in raw and isinstance(raw["model"], Mapping):
        raw = raw["model"]
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: not a state dict")
    try:
        return from_original(raw, config)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None

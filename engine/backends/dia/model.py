"""Dia's encoder and decoder over static caches, for continuous batching.

The network (read from transformers' ``models/dia`` and nari-labs/dia, written
anew here): a byte-level text encoder (RoPE, bidirectional self-attention,
SiLU-gated MLP, pre-RMSNorm) and an audio decoder whose input at each row is
the sum of nine channel embeddings, with causal grouped-query self-attention,
cross-attention over the encoder output, a gated MLP and a head that predicts
all nine channels at once.  Attention is unscaled (scale 1.0).

Parameter names follow the transformers checkpoint layout
(``model.encoder.…``, ``model.decoder.…``, ``logits_dense``), so a
``model.safetensors`` loads with ``load_state_dict`` as it is.

Classifier-free guidance doubles every request: row ``2·slot`` is the
conditional row, ``2·slot + 1`` the unconditional one (zero text bytes under
the same padding mask).  :class:`DecoderCache` holds each row's self-attention
keys and values up to ``max_len`` positions and each slot's cross-attention
keys and values (computed once per request), so requests join and leave
between steps without touching each other.  Not thread-safe: one call at a
time per model (the backend's lane), on a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from streamvox.engine.backends.dia.config import DecoderConfig, DiaConfig, EncoderConfig
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden, 2 * ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(up * F.silu(gate))


class Projections(nn.Module):
    """q/k/v/o projections of one attention block (``kv_in`` is the width keys and values read)."""

    def __init__(self, hidden: int, kv_in: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def split(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        """``(R, T, heads·d)`` -> ``(R, heads, T, d)``."""
        return x.view(*x.shape[:2], heads, self.head_dim).transpose(1, 2)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(self.q_proj(x), self.heads)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split(self.k_proj(x), self.kv_heads), self.split(self.v_proj(x), self.kv_heads)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Unscaled attention of ``q`` over ``k``/``v`` where ``allowed`` (R, T, S) is true."""
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=1.0)
        return self.o_proj(out.transpose(1, 2).reshape(*q.shape[:1], q.shape[2], -1))


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """cos and sin ``(R, 1, T, head_dim)`` for integer ``positions`` ``(R, T)`` (rotate-half layout)."""
    steps = torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (theta ** (steps / head_dim))
    freqs = positions[..., None].float() * inv_freq
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class EncoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig, eps: float) -> None:
        super().__init__()
        self.pre_sa_norm = RMSNorm(config.hidden, eps)
        self.self_attention = Projections(config.hidden, config.hidden, config.heads, config.kv_heads, config.head_dim)
        self.post_sa_norm = RMSNorm(config.hidden, eps)
        self.mlp = GatedMLP(config.hidden, config.ffn)


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig, eps: float) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab, config.hidden)
        self.layers = nn.ModuleList(EncoderLayer(config, eps) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Text bytes ``(R, L)`` under a padding ``mask`` ``(R, L)`` -> ``(R, L, hidden)``."""
        x = self.embedding(ids)
        positions = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        allowed = mask[:, None, :].expand(-1, ids.shape[1], -1)
        for layer in self.layers:
            attn = layer.self_attention
            h = layer.pre_sa_norm(x)
            k, v = attn.keys_values(h)
            q, k = apply_rope(attn.queries(h), cos, sin), apply_rope(k, cos, sin)
            x = x + attn.attend(q, k, v, allowed)
            x = x + layer.mlp(layer.post_sa_norm(x))
        return self.norm(x)


class ChannelEmbedding(nn.Module):
    """One table for all channels: channel ``c``'s id ``i`` is row ``c·vocab + i``; a row's channels are summed."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab * config.channels, config.hidden)
        self.register_buffer("offsets", torch.arange(config.channels) * config.vocab, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens + self.offsets).sum(dim=-2)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig, cross_in: int, eps: float) -> None:
        super().__init__()
        self.self_attention = Projections(config.hidden, config.hidden, config.heads, config.kv_heads, config.head_dim)
        self.cross_attention = Projections(
            config.hidden, cross_in, config.cross_heads, config.cross_kv_heads, config.cross_head_dim
        )
        self.pre_sa_norm = RMSNorm(config.hidden, eps)
        self.pre_ca_norm = RMSNorm(config.hidden, eps)
        self.pre_mlp_norm = RMSNorm(config.hidden, eps)
        self.mlp = GatedMLP(config.hidden, config.ffn)


class Decoder(nn.Module):
    def __init__(self, config: DecoderConfig, cross_in: int, eps: float) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ChannelEmbedding(config)
        self.layers = nn.ModuleList(DecoderLayer(config, cross_in, eps) for _ in range(config.layers))
        self.norm = RMSNorm(config.hidden, eps)


@dataclass
class DecoderCache:
    """Static keys and values: ``self_k[layer]`` is ``(rows, kv_heads, max_len, head_dim)``;
    ``cross_k[layer]`` is ``(rows, cross_kv_heads, max_text, cross_head_dim)`` with ``text_mask``
    ``(rows, max_text)``; ``lengths[row]`` counts the positions written."""

    self_k: list[torch.Tensor]
    self_v: list[torch.Tensor]
    cross_k: list[torch.Tensor]
    cross_v: list[torch.Tensor]
    text_mask: torch.Tensor
    lengths: torch.Tensor

    @property
    def rows(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def max_len(self) -> int:
        return int(self.self_k[0].shape[2])

    def clear(self, rows: list[int]) -> None:
        """Forget what ``rows`` held (a slot given back); the tensors stay allocated."""
        index = torch.tensor(rows, device=self.lengths.device)
        self.lengths[index] = 0
        self.text_mask[index] = False


class DiaNetwork(nn.Module):
    """The whole model; ``encode``, ``start`` and ``decode`` are what the backend calls.  It runs on the
    device its parameters are on (``.to(device)``), caches included; inputs may come from the CPU."""

    def __init__(self, config: DiaConfig) -> None:
        super().__init__()
        self.config = config
        self.model = nn.Module()
        self.model.encoder = Encoder(config.encoder, config.norm_eps)
        self.model.decoder = Decoder(config.decoder, config.encoder.hidden, config.norm_eps)
        d = config.decoder
        self.logits_dense = nn.Linear(d.hidden, d.channels * d.vocab, bias=False)

    @property
    def encoder(self) -> Encoder:
        return self.model.encoder  # type: ignore[return-value]

    @property
    def decoder(self) -> Decoder:
        return self.model.decoder  # type: ignore[return-value]

    def new_cache(self, rows: int, max_len: int, max_text: int | None = None) -> DecoderCache:
        """Zeroed caches for ``rows`` decoder rows (two per request) of ``max_len`` positions."""
        d, weight = self.config.decoder, self.decoder.norm.weight
        on = {"dtype": weight.dtype, "device": weight.device}
        max_text = max_text or self.config.encoder.max_positions
        self_shape = (rows, d.kv_heads, max_len, d.head_dim)
        cross_shape = (rows, d.cross_kv_heads, max_text, d.cross_head_dim)
        return DecoderCache(
            self_k=[torch.zeros(self_shape, **on) for _ in range(d.layers)],
            self_v=[torch.zeros(self_shape, **on) for _ in range(d.layers)],
            cross_k=[torch.zeros(cross_shape, **on) for _ in range(d.layers)],
            cross_v=[torch.zeros(cross_shape, **on) for _ in range(d.layers)],
            text_mask=torch.zeros(rows, max_text, dtype=torch.bool, device=weight.device),
            lengths=torch.zeros(rows, dtype=torch.long, device=weight.device),
        )

    @property
    def device(self) -> torch.device:
        return self.decoder.norm.weight.device  # (the linears may be column-blocked, without a weight)

    @torch.inference_mode()
    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(ids.to(self.device), mask.to(self.device))

    @torch.inference_mode()
    def start(self, cache: DecoderCache, rows: list[int], encoded: torch.Tensor, mask: torch.Tensor) -> None:
        """Fill ``rows``' cross-attention keys and values from their encoder output (once per request)."""
        if encoded.shape[1] > cache.text_mask.shape[1]:
            raise ValueError(f"text of {encoded.shape[1]} bytes exceeds the cache's {cache.text_mask.shape[1]}")
        index, width = torch.tensor(rows, device=self.device), encoded.shape[1]
        mask = mask.to(self.device)
        for layer_index, layer in enumerate(self.decoder.layers):
            k, v = layer.cross_attention.keys_values(encoded)
            cache.cross_k[layer_index][index, :, :width] = k
            cache.cross_v[layer_index][index, :, :width] = v
        cache.text_mask[index] = False
        cache.text_mask[index, :width] = mask
        cache.lengths[index] = 0

    @torch.inference_mode()
    def decode(self, cache: DecoderCache, rows: list[int], tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``(R, T, channels)`` to ``rows`` (each at its own length) and return
        the logits ``(R, T, channels, vocab)`` for the rows after them."""
        d, device = self.config.decoder, self.device
        index = torch.tensor(rows, device=device)
        steps = tokens.shape[1]
        start = cache.lengths[index]
        if int(start.max()) + steps > cache.max_len:
            raise ValueError(f"a row would pass the cache's {cache.max_len} positions")
        positions = start[:, None] + torch.arange(steps, device=device)
        span = int(positions.max()) + 1
        x = self.decoder.embeddings(tokens.to(device))
        cos, sin = rope_tables(positions, d.head_dim, d.rope_theta, x.dtype)
        causal = torch.arange(span, device=device)[None, None, :] <= positions[:, :, None]
        text_mask = cache.text_mask[index]
        text_width = _last_true(text_mask) + 1
        cross_allowed = text_mask[:, None, :text_width].expand(-1, steps, -1)
        x = self._layers(
            cache,
            x,
            (cos, sin),
            (index.repeat_interleave(steps), positions.reshape(-1)),
            lambda t: t[index, :, :span],
            causal,
            lambda t: t[index, :, :text_width],
            cross_allowed,
        )
        cache.lengths[index] = start + steps
        logits = self.logits_dense(self.decoder.norm(x))
        return logits.view(len(rows), steps, d.channels, d.vocab)

    @torch.no_grad()  # not inference_mode: torch.compile cannot trace the caches' views under it
    def decode_all(self, cache: DecoderCache, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """One row for every cache row at once: ``tokens`` ``(rows, channels)`` on the device, ``active``
        a bool mask of the rows that take theirs; returns logits ``(rows, channels, vocab)`` on the
        device (the inactive rows' are meaningless).  Self-attention reads the whole cache width
        under a causal mask and cross-attention the whole text width under the text mask, so the
        shapes never change and nothing is read back to the host: the step ``torch.compile`` and
        CUDA graphs capture (:mod:`streamvox.engine.ar.fixed_step`).  An inactive row writes its key
        and value at its own length, which its next real row overwrites before any step reads
        it, and its length does not move; the caller keeps every active row below ``max_len``."""
        d, device = self.config.decoder, self.device
        rows, max_len, max_text = cache.rows, cache.max_len, cache.text_mask.shape[1]
        positions = cache.lengths.clamp(max=max_len - 1)[:, None]
        x = self.decoder.embeddings(tokens[:, None, :])
        cos, sin = rope_tables(positions, d.head_dim, d.rope_theta, x.dtype)
        causal = torch.arange(max_len, device=device)[None, None, :] <= positions[:, :, None]
        # A free row has no text: let it read position 0, so its (discarded) row stays finite.
        no_text = ~cache.text_mask.any(dim=1, keepdim=True)
        first = torch.arange(max_text, device=device)[None, :] == 0
        cross_allowed = (cache.text_mask | (no_text & first))[:, None, :]
        every = (torch.arange(rows, device=device), positions[:, 0])
        x = self._layers(cache, x, (cos, sin), every, _whole, causal, _whole, cross_allowed)
        cache.lengths += active.long()
        logits = self.logits_dense(self.decoder.norm(x))
        return logits.view(rows, d.channels, d.vocab)

    def _layers(
        self,
        cache: DecoderCache,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        write_at: tuple[torch.Tensor, torch.Tensor],
        read: Callable[[torch.Tensor], torch.Tensor],
        causal: torch.Tensor,
        read_text: Callable[[torch.Tensor], torch.Tensor],
        cross_allowed: torch.Tensor,
    ) -> torch.Tensor:
        """The decoder layers over new rows ``x`` ``(R, T, hidden)``: their keys and values are written
        to the cache at ``write_at`` (cache rows and positions, one pair per new row), then they
        attend over ``read`` of each layer's self-attention cache and ``read_text`` of its
        cross-attention cache, under the ``causal`` and ``cross_allowed`` masks."""
        cos, sin = rope
        write_rows, write_pos = write_at
        for layer_index, layer in enumerate(self.decoder.layers):
            attn = layer.self_attention
            h = layer.pre_sa_norm(x)
            k, v = attn.keys_values(h)
            q, k = apply_rope(attn.queries(h), cos, sin), apply_rope(k, cos, sin)
            keys, values = cache.self_k[layer_index], cache.self_v[layer_index]
            keys[write_rows, :, write_pos] = k.transpose(1, 2).reshape(-1, attn.kv_heads, attn.head_dim)
            values[write_rows, :, write_pos] = v.transpose(1, 2).reshape(-1, attn.kv_heads, attn.head_dim)
            x = x + attn.attend(q, read(keys), read(values), causal)
            cross = layer.cross_attention
            q = cross.queries(layer.pre_ca_norm(x))
            x = x + cross.attend(
                q, read_text(cache.cross_k[layer_index]), read_text(cache.cross_v[layer_index]), cross_allowed
            )
            x = x + layer.mlp(layer.pre_mlp_norm(x))
        return x


class CachedDecoder:
    """A network bound to its cache, as :class:`~streamvox.engine.ar.fixed_step.FixedShapeStep` steps
    it: a slot is one cache row (a request has two) and its input a row of ``channels`` codes."""

    def __init__(self, network: DiaNetwork, cache: DecoderCache) -> None:
        self.network = network
        self.cache = cache
        self.slots = cache.rows
        self.max_len = cache.max_len
        self.device = network.device
        self.lengths = cache.lengths
        self.token_shape = (network.config.decoder.channels,)

    def step_all(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return self.network.decode_all(self.cache, tokens, active)


def _whole(cache: torch.Tensor) -> torch.Tensor:
    """A cache read whole: every row, every position (the fixed-shape step)."""
    return cache


def _last_true(mask: torch.Tensor) -> int:
    """The largest column index holding a true value anywhere in ``mask`` (0 if none)."""
    columns = mask.any(dim=0).nonzero()
    return int(columns[-1]) if len(columns) else 0

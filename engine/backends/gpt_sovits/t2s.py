"""GPT-SoVITS's text-to-semantic (T2S) decoder over a preallocated static KV cache.

The network (read from RVC-Boss/GPT-SoVITS, written anew here): phoneme
embeddings plus a projection of 1024-d BERT features (zeros for English), and
the prompt's semantic-token embeddings, each with sine positions scaled by a
learnt ``alpha`` (audio positions restart at 0); a post-LN transformer (ReLU
MLP) under a prefix-LM mask (text sees all text, audio sees all text and the
audio before it); a linear head over 1025 semantic tokens (1024 is end of
speech).

The cache holds ``slots`` streams of up to ``max_len`` positions each, with a
length per slot.  ``prefill`` fills one slot from its text and prompt;
``step`` appends one token to each of a batch of slots and returns their next
logits, attending only below each slot's own length, so streams join and
leave between steps (continuous batching) without touching each other.
``step_all`` is the same step over every slot at once, with a mask of the
slots that take a token and attention over the whole cache width: its shapes
never change and it never reads a value back to the host, which is what
``torch.compile`` and a CUDA graph need (:mod:`streamvox.engine.ar.fixed_step`
wraps it); its tokens equal ``step``'s (tested).

The decoder lives on one ``device`` in one ``dtype`` (float32, or bfloat16
for a GPU); logits come back as float32 on the CPU, where sampling runs.

Not thread-safe: one T2S call at a time per decoder (the backend's lane), on a worker.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from streamvox.engine.ar.blocked_linear import block_count, blocked_product, column_blocks
from streamvox.engine.ar.cpu_attention import CacheAttention, prefix_attention
from streamvox.engine.ar.cpu_attention import available as fused_attention_available
from streamvox.engine.ar.cpu_linear import Int8Linear, fits
from streamvox.engine.ar.cpu_linear import fast_path as vnni_int8_available

BERT_DIM = 1024


@dataclass(frozen=True)
class T2SConfig:
    """Sizes of a T2S model (defaults: GPT-SoVITS v2)."""

    hidden: int = 512
    heads: int = 16
    layers: int = 24
    ffn: int = 2048
    vocab: int = 1025
    phoneme_vocab: int = 732
    eos: int = 1024
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        if self.eos != self.vocab - 1:
            raise ValueError("end of speech must be the last token")

    @classmethod
    def tiny(cls) -> T2SConfig:
        """A seconds-fast model for tests."""
        return cls(hidden=32, heads=2, layers=2, ffn=128)

    @classmethod
    def from_checkpoint(cls, config: Mapping[str, Any]) -> T2SConfig:
        """From an s1 checkpoint's ``config`` (its ``model`` section)."""
        try:
            model = config["model"]
            hidden = int(model["hidden_dim"])
            if int(model.get("embedding_dim", hidden)) != hidden:
                raise ValueError("embedding_dim must equal hidden_dim")
            return cls(
                hidden=hidden,
                heads=int(model["head"]),
                layers=int(model["n_layer"]),
                ffn=4 * hidden,
                vocab=int(model["vocab_size"]),
                phoneme_vocab=int(model["phoneme_vocab_size"]),
                eos=int(model["EOS"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a GPT-SoVITS s1 config: {exc}") from None


def sine_positions(length: int, dim: int) -> torch.Tensor:
    """Sine/cosine position table, ``(length, dim)``, float32."""
    position = torch.arange(0, length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


class T2SDecoder:
    """See the module docstring.  Weights are the s1 state dict without its ``model.`` prefix."""

    def __init__(
        self,
        weights: Mapping[str, torch.Tensor],
        config: T2SConfig,
        slots: int = 1,
        max_len: int = 2048,
        int8: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        fused_attention: bool = True,
        cache_dtype: torch.dtype | None = None,
    ) -> None:
        """``int8`` stores the transformer's linear weights as int8 per output channel (fbgemm dynamic
        quantisation): a batch-1 step reads a quarter of the bytes, which is what bounds it on a CPU.
        Logits then differ from fp32 by about 1 % per layer, so tokens may differ too; the parity
        tests use fp32.  ``device`` and ``dtype`` place every weight and the cache (int8 is for
        float32 on the CPU only).  ``fused_attention`` runs the attention of :meth:`prefill` and
        :meth:`step` through the C kernels (:mod:`streamvox.engine.ar.cpu_attention`) where they
        apply: float32 on the CPU, kernels built; ``False`` keeps torch's own (the A/B and the
        tests' control).
        ``cache_dtype`` stores the keys and values in another type than ``dtype``: ``bfloat16`` on a
        float32 CPU decoder halves the bytes a step reads, ``int8`` (one float32 scale per row of a
        head, see :class:`~streamvox.engine.ar.cpu_attention.CacheAttention`) reads 36 bytes for a
        row of 32 where bf16 reads 64, and its scores are integer products (VNNI); the fused kernel
        reads either, logits move by the cache's rounding, so tokens may differ; ``None`` keeps
        ``dtype``.  An int8 cache is allocated to a multiple of 16 positions (``max_len`` stays the limit)."""
        self.device = torch.device(device)
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"a T2S decoder runs in float32, bfloat16 or float16, not {dtype}")
        if int8 and (self.device.type != "cpu" or dtype != torch.float32):
            raise ValueError("int8 T2S weights are for float32 on the CPU")
        self.dtype = dtype
        self.config = config
        self.int8 = int8
        self.slots = slots
        self.max_len = max_len

        def w(name: str) -> torch.Tensor:
            try:
                tensor = weights[name]
            except KeyError:
                raise ValueError(f"T2S weights lack {name!r}") from None
            return tensor.detach().to(device=self.device, dtype=dtype).contiguous()

        self.bert_proj = (w("bert_proj.weight"), w("bert_proj.bias"))
        self.text_embedding = w("ar_text_embedding.word_embeddings.weight")
        self.audio_embedding = w("ar_audio_embedding.word_embeddings.weight")
        self.text_alpha = w("ar_text_position.alpha")
        self.audio_alpha = w("ar_audio_position.alpha")
        self.head = w("ar_predict_layer.weight")
        # Column blocks pay on CPU threads in float32 (see _Linear); elsewhere the library's own product is best.
        self._blocked = self.device.type == "cpu" and dtype == torch.float32

        def layer(i: int) -> _Layer:
            p = f"h.layers.{i}."

            def linear(weight: str, bias: str) -> _Linear:
                return _Linear(w(p + weight), w(p + bias), int8, blocked=self._blocked)

            return _Layer(
                w(p + "norm1.weight"),
                w(p + "norm1.bias"),
                w(p + "norm2.weight"),
                w(p + "norm2.bias"),
                linear("self_attn.in_proj_weight", "self_attn.in_proj_bias"),
                linear("self_attn.out_proj.weight", "self_attn.out_proj.bias"),
                linear("linear1.weight", "linear1.bias"),
                linear("linear2.weight", "linear2.bias"),
                config.norm_eps,
            )

        self._layers = [layer(i) for i in range(config.layers)]
        """Each layer's norms and linears, unpacked once: a step's loop runs 24 times a token."""
        if self.text_embedding.shape != (config.phoneme_vocab, config.hidden):
            raise ValueError(f"text embedding is {tuple(self.text_embedding.shape)}, config says otherwise")
        if self.head.shape != (config.vocab, config.hidden):
            raise ValueError(f"output head is {tuple(self.head.shape)}, config says otherwise")
        if cache_dtype not in (None, dtype, torch.bfloat16, torch.int8):
            raise ValueError(f"a T2S cache holds {dtype}, bfloat16 or int8, not {cache_dtype}")
        self.positions = sine_positions(max_len, config.hidden).to(device=self.device, dtype=dtype)
        head_dim = config.hidden // config.heads
        cache_len = -(-max_len // 16) * 16 if cache_dtype == torch.int8 else max_len  # whole key blocks
        shape = (config.layers, 2, slots, config.heads, cache_len, head_dim)
        self.kv_cache = torch.zeros(shape, device=self.device, dtype=cache_dtype or dtype)
        """Keys (index 0 of the second dimension) and values (1): one layer's new keys and values are
        written by one call."""
        self.kv_scales = torch.zeros(shape[:-1], device=self.device) if cache_dtype == torch.int8 else None
        """An int8 cache's row scales (a row is its int8 values times its scale); ``None`` otherwise."""
        self.k_cache = self.kv_cache[:, 0]
        self.v_cache = self.kv_cache[:, 1]
        self._kv_rows = [self.kv_cache[layer].view(-1, head_dim) for layer in range(config.layers)]
        """Each layer's keys and values as rows of ``head_dim``: where a step writes its new ones."""
        self.lengths = torch.zeros(slots, dtype=torch.long, device=self.device)
        """Cache positions filled per slot (text + prompt + tokens fed so far)."""
        self.audio_lengths = torch.zeros(slots, dtype=torch.long, device=self.device)
        """Semantic tokens per slot (prompt + fed): the next token's audio position."""
        self.token_shape: tuple[int, ...] = ()
        """One token per slot and step (see :class:`~streamvox.engine.ar.fixed_step.FixedShapeModel`)."""
        self._slot_ids = torch.arange(slots, device=self.device)
        self._widths = torch.arange(max_len, device=self.device)
        self._heads = torch.arange(config.heads, device=self.device)
        self._kv = torch.arange(2, device=self.device).view(1, 2, 1)
        self.attention: CacheAttention | None = None
        """The step's attention kernel bound to the cache, when :meth:`step` and :meth:`prefill` use
        the C kernels."""
        if fused_attention and self.device.type == "cpu" and dtype == torch.float32 and fused_attention_available():
            self.attention = CacheAttention(self.kv_cache, scales=self.kv_scales)
        if self.kv_cache.dtype != dtype and self.attention is None:
            raise ValueError(
                f"a {self.kv_cache.dtype} cache under {dtype} weights needs the fused attention kernel "
                "(float32 on the CPU, built at install)"
            )

    @torch.inference_mode()
    def prefill(
        self, slot: int, phonemes: torch.Tensor, prompt: torch.Tensor, bert: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fill ``slot`` with a text (phoneme ids) and a prompt (semantic tokens); return the
        logits ``(vocab,)`` for the first token to generate.  ``bert`` is ``(1024, len(phonemes))``
        or ``None`` for zeros (what GPT-SoVITS feeds for English)."""
        n_text, n_audio = int(phonemes.shape[0]), int(prompt.shape[0])
        total = n_text + n_audio
        if total == 0 or total >= self.max_len:
            raise ValueError(f"prefill needs 1..{self.max_len - 1} positions, got {total}")
        device, dtype = self.device, self.dtype
        text = F.embedding(phonemes.long().to(device), self.text_embedding)
        if bert is not None and tuple(bert.shape) != (BERT_DIM, n_text):
            raise ValueError(f"bert features must be ({BERT_DIM}, {n_text}), got {tuple(bert.shape)}")
        if bert is None:  # zeros through the projection give its bias exactly: no product needed
            text = text + self.bert_proj[1]
        else:
            text = text + F.linear(bert.to(device=device, dtype=dtype).T, *self.bert_proj)
        text = text + self.text_alpha * self.positions[:n_text]
        audio = F.embedding(prompt.long().to(device), self.audio_embedding)
        audio = audio + self.audio_alpha * self.positions[:n_audio]
        x = torch.cat([text, audio], dim=0)
        if self.attention is not None:
            x = self._fused_prefill(slot, x, n_text)
        else:
            x = self._torch_prefill(slot, x, n_text)
        self.lengths[slot] = total
        self.audio_lengths[slot] = n_audio
        return F.linear(x[-1], self.head).float().cpu()

    @torch.inference_mode()
    def step(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens[i]`` to ``slots[i]`` (each slot at most once); return logits ``(len(slots), vocab)``,
        float32 on the CPU.  Through the fused kernel (``self.attention``) each slot attends over its own
        length; through torch's products up to the longest of these slots, so shapes vary by step."""
        slots, tokens = slots.long().to(self.device), tokens.long().to(self.device)
        positions = self.lengths[slots]
        longest = int(positions.max())
        if longest >= self.max_len:
            raise ValueError(f"a slot reached the cache length {self.max_len}")
        if self.attention is not None:
            logits = self._fused_step(slots.contiguous(), tokens, positions)
        else:
            first = int(slots[0])
            # Slots in one run (the usual case: the engine keeps live streams packed) are read as
            # views; any other set is gathered, which copies the caches it reads.
            packed = bool(torch.equal(slots, self._slot_ids[first : first + len(slots)]))
            logits = self._step(slots, tokens, positions, longest + 1, first if packed else None)
        self.lengths[slots] += 1
        self.audio_lengths[slots] += 1
        return logits.float().cpu()

    @torch.no_grad()  # not inference_mode: torch.compile cannot trace the caches' views under it
    def step_all(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """One step of every slot: ``tokens`` ``(slots,)`` on the decoder's device, ``active`` a bool
        mask of the slots that take theirs; returns logits ``(slots, vocab)`` on the device (the
        inactive rows are meaningless).  Fixed shapes and no read-back to the host: the step
        ``torch.compile`` and CUDA graphs capture.  An inactive slot's row writes its key and value
        at its own length, where its next real token overwrites them before any step reads them,
        and its length does not move; the caller keeps every active slot below ``max_len``."""
        if self.kv_cache.dtype != self.dtype:
            raise ValueError("the fixed-shape step runs torch's attention, which needs the cache in the weights' dtype")
        positions = self.lengths.clamp(max=self.max_len - 1)
        logits = self._step(self._slot_ids, tokens.long(), positions, self.max_len, 0)
        grown = active.long()
        self.lengths += grown
        self.audio_lengths += grown
        return logits

    def _step(
        self, slots: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor, width: int, first: int | None
    ) -> torch.Tensor:
        """The transformer over one new token per row; ``first`` is set when ``slots`` are
        ``first, first + 1, ...`` (their caches are read as views, not gathered)."""
        batch, hidden, heads = len(slots), self.config.hidden, self.config.heads
        head_dim = hidden // heads
        # One query per row, so rows stay 2-D ``(batch, hidden)`` and heads are views of them.
        x = F.embedding(tokens, self.audio_embedding) + self.audio_alpha * self.positions[self.audio_lengths[slots]]
        keep = self._widths[:width].unsqueeze(0) <= positions.unsqueeze(1)
        bias = torch.zeros(keep.shape, device=self.device, dtype=self.dtype).masked_fill(~keep, float("-inf"))
        flat_bias = bias.unsqueeze(1).expand(batch, heads, width).reshape(batch * heads, 1, width)
        # Where each (row, key or value, head) writes in a layer's cache seen as rows of D: the
        # order of ``qkv[:, hidden:]``'s rows of D.
        kv_rows = (self._kv * self.slots + slots.view(-1, 1, 1)) * heads + self._heads
        write_at = (kv_rows * self.max_len + positions.view(-1, 1, 1)).flatten()
        if first is not None:
            # Every layer's keys (transposed) and values for these rows, as views made once per
            # step: they see each layer's new key and value once written.
            keys_t = self.k_cache[:, first : first + batch, :, :width].flatten(1, 2).transpose(2, 3)
            values = self.v_cache[:, first : first + batch, :, :width].flatten(1, 2)
        scale = head_dim**-0.5
        for layer, block in enumerate(self._layers):
            qkv = block.qkv(x)
            q = qkv[:, :hidden].reshape(batch * heads, 1, head_dim)
            self._kv_rows[layer].index_copy_(0, write_at, qkv[:, hidden:].reshape(-1, head_dim))
            if first is not None:
                layer_keys_t, layer_values = keys_t[layer], values[layer]
            else:  # gathered after this layer's write, so the new position is in it
                layer_keys_t = self.k_cache[layer][slots, :, :width].flatten(0, 1).transpose(1, 2)
                layer_values = self.v_cache[layer][slots, :, :width].flatten(0, 1)
            # Two batched products over the B * H heads beat the fused CPU kernel here (it is built
            # for long queries); masked positions get -inf, so exactly zero weight.
            scores = torch.baddbmm(flat_bias, q, layer_keys_t, alpha=scale)
            attn = torch.bmm(torch.softmax(scores, dim=-1), layer_values).view(batch, hidden)
            x = block.finish(x, attn)
        return F.linear(x, self.head)

    def _fused_prefill(self, slot: int, x: torch.Tensor, n_text: int) -> torch.Tensor:
        """:meth:`prefill`'s layers with the C prefix-attention kernel (CPU, float32): ``x`` is the
        ``(positions, hidden)`` input; returns the last layer's output.  The prefix-LM mask is a
        prefix per row: text rows see the text, audio rows the text and the audio up to themselves."""
        total, hidden, heads = x.shape[0], self.config.hidden, self.config.heads
        widths = torch.cat([torch.full((n_text,), n_text), torch.arange(n_text + 1, total + 1)])
        assert self.attention is not None
        for layer, block in enumerate(self._layers):
            qkv = block.qkv(x).contiguous()
            self.attention.store(layer, 0, slot, qkv[:, hidden : 2 * hidden])
            self.attention.store(layer, 1, slot, qkv[:, 2 * hidden :])
            x = block.finish(x, prefix_attention(qkv, widths, heads))
        return x

    def _torch_prefill(self, slot: int, x: torch.Tensor, n_text: int) -> torch.Tensor:
        """:meth:`prefill`'s layers with torch's attention under the prefix-LM mask (any device and
        dtype): ``x`` is the ``(positions, hidden)`` input; returns the last layer's output."""
        total, hidden, heads = x.shape[0], self.config.hidden, self.config.heads
        keep = torch.zeros(total, total, dtype=torch.bool, device=self.device)
        keep[:, :n_text] = True
        n_audio = total - n_text
        keep[n_text:, n_text:] = torch.tril(torch.ones(n_audio, n_audio, dtype=torch.bool, device=self.device))
        x = x.unsqueeze(0)
        for layer, block in enumerate(self._layers):
            q, k, v = (t.view(1, total, heads, -1).transpose(1, 2) for t in block.qkv(x).chunk(3, dim=-1))
            self.k_cache[layer, slot, :, :total] = k[0]
            self.v_cache[layer, slot, :, :total] = v[0]
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            x = block.finish(x, attn.transpose(1, 2).reshape(1, total, hidden))
        return x[0]

    def _fused_step(self, slots: torch.Tensor, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """:meth:`_step` with each layer's cache write and attention in one kernel call (CPU, float32):
        every slot attends over its own live positions only, so no mask and no width."""
        attention = self.attention
        assert attention is not None
        attention.check(slots, positions)
        x = F.embedding(tokens, self.audio_embedding) + self.audio_alpha * self.positions[self.audio_lengths[slots]]
        attn = torch.empty(len(slots), self.config.hidden)
        for layer, block in enumerate(self._layers):
            x = block.finish(x, attention(layer, block.qkv(x).contiguous(), slots, positions, attn))
        return F.linear(x, self.head)

    def release(self, slot: int) -> None:
        """Free a slot for the next stream (its old positions are masked out by its length)."""
        self.lengths[slot] = 0
        self.audio_lengths[slot] = 0


class _Linear:
    """``x @ W.T + b``, in fp32 or with W as int8 per output channel.

    fp32 keeps W as one column block per torch thread (:mod:`streamvox.engine.ar.blocked_linear`),
    counted when the decoder is built, so it does not change with load; the logits do not
    depend on it (tested).  On 2 cores (``scripts/ab_t2s.py``, against a plain ``F.linear``
    over W) a step runs 1.7x faster at batch 1, 1.6x at 4, 1.2x at 16; the prefill is
    unchanged.  int8 runs :class:`~streamvox.engine.ar.cpu_linear.Int8Linear` on a CPU with
    AVX-512 VNNI (each row's input quantised over its own range) for a step's rows and a
    prefill's alike, and keeps no other copy of W; elsewhere, or for a weight the kernel does
    not fit, fbgemm's dynamic int8 product (one input range per call).  Off the CPU or outside
    float32 (``blocked=False``) it is a plain ``F.linear``."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, int8: bool, blocked: bool = True) -> None:
        self.parts = block_count(weight.shape[0], torch.get_num_threads())
        self.blocks = column_blocks(weight, self.parts) if blocked and not int8 else None
        self.weight = None if blocked or int8 else weight
        self.bias = bias
        self.vnni: Int8Linear | None = None
        self.packed = None
        if int8 and vnni_int8_available() and fits(weight):
            self.vnni = Int8Linear(weight, bias)
        elif int8:
            scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
            zero = torch.zeros(weight.shape[0], dtype=torch.long)
            with warnings.catch_warnings():  # torch 2.13 marks quantised tensors deprecated; still supported
                warnings.simplefilter("ignore")
                quantized = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
                self.packed = torch.ops.quantized.linear_prepack(quantized, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, relu=False)

    def relu(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(self(x))``, fused for int8."""
        return self._apply(x, relu=True)

    def _apply(self, x: torch.Tensor, relu: bool) -> torch.Tensor:
        if self.vnni is not None or self.packed is not None:  # int8
            flat = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])  # a step's rows: no reshaping
            if self.vnni is not None:
                y = self.vnni(flat, relu=relu)
            elif relu:
                y = torch.ops.quantized.linear_relu_dynamic(flat, self.packed)
            else:
                y = torch.ops.quantized.linear_dynamic(flat, self.packed)
            return y if x.dim() == 2 else y.view(*x.shape[:-1], -1)
        if self.weight is not None:
            y = F.linear(x, self.weight, self.bias)
        else:
            assert self.blocks is not None
            y = blocked_product(x, self.blocks, self.bias)
        return F.relu(y) if relu else y


class _Layer(NamedTuple):
    """One post-LN transformer layer's weights; :meth:`finish` is everything after its attention."""

    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    qkv: _Linear
    out: _Linear
    fc1: _Linear
    fc2: _Linear
    eps: float

    def finish(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """``x`` after the layer, given its attention output ``attn`` (same shape as ``x``): the
        output projection, residual and norm, then the ReLU MLP, residual and norm."""
        x = F.layer_norm(x + self.out(attn), self.ln1_w.shape, self.ln1_w, self.ln1_b, self.eps)
        return F.layer_norm(x + self.fc2(self.fc1.relu(x)), self.ln2_w.shape, self.ln2_w, self.ln2_b, self.eps)

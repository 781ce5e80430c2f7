"""The VITS building blocks SoVITS decodes with, as functions over a weight dict.

Each function takes the flat state dict (weight norm already folded, see
:func:`fold_weight_norm`) and the name prefix of one block, so a decoder
holds no ``nn.Module`` tree and one set of weights serves every stream.
Read from RVC-Boss/GPT-SoVITS's ``module/`` (VITS lineage) and written anew;
inference only, so dropout is absent and every sequence in a batch has the
same length (no padding masks).

Pure functions of their inputs: safe to call from several threads at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

Weights = Mapping[str, torch.Tensor]

LRELU_SLOPE = 0.1


def fold_weight_norm(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 copies of ``weights`` with each weight-normed pair folded into a plain ``weight``.

    Handles both spellings torch has used: ``X.weight_g``/``X.weight_v`` and
    ``X.parametrizations.weight.original0``/``original1``.  The norm is taken over every
    dimension where ``g`` has size 1, so the normed dimension is read from ``g``'s shape (the
    first by default; HuBERT's position convolution uses the last).
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        tensor = tensor.detach().to(torch.float32)
        for suffix, part in (
            (".weight_g", "g"),
            (".weight_v", "v"),
            (".parametrizations.weight.original0", "g"),
            (".parametrizations.weight.original1", "v"),
        ):
            if name.endswith(suffix):
                pairs.setdefault(name[: -len(suffix)], {})[part] = tensor
                break
        else:
            out[name] = tensor
    for base, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise ValueError(f"weight-normed {base!r} lacks its {'g' if 'g' not in pair else 'v'} half")
        g, v = pair["g"], pair["v"]
        dims = tuple(d for d in range(v.dim()) if g.dim() != v.dim() or g.shape[d] == 1)
        norm = v.norm(dim=dims, keepdim=True)
        out[base + ".weight"] = (g * v / norm).contiguous()
    return out


def conv1d(w: Weights, name: str, x: torch.Tensor, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """``Conv1d`` named ``name`` (bias optional)."""
    return F.conv1d(x, w[name + ".weight"], w.get(name + ".bias"), padding=padding, dilation=dilation)


def linear(w: Weights, name: str, x: torch.Tensor) -> torch.Tensor:
    """``Linear`` named ``name``."""
    return F.linear(x, w[name + ".weight"], w.get(name + ".bias"))


def channel_layer_norm(w: Weights, name: str, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Layer norm over the channels of a ``(batch, channels, time)`` tensor (``gamma``/``beta``)."""
    gamma = w[name + ".gamma"]
    return F.layer_norm(x.transpose(1, 2), gamma.shape, gamma, w[name + ".beta"], eps).transpose(1, 2)


def _relative_index(length: int, window: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For query i and key j: the relative-embedding row ``j - i + window`` and whether it is in range."""
    pos = torch.arange(length, device=device)
    offset = pos[None, :] - pos[:, None] + window
    valid = (offset >= 0) & (offset <= 2 * window)
    return offset.clamp(0, 2 * window), valid


def attention(
    w: Weights,
    name: str,
    x: torch.Tensor,
    context: torch.Tensor,
    heads: int,
    window: int | None,
) -> torch.Tensor:
    """Multi-head attention with 1x1-conv projections, ``(batch, channels, time)`` in and out.

    With ``window`` (self-attention only) a learnt embedding per relative offset in
    ``[-window, window]`` is added to the keys' logits and to the values, as in VITS;
    offsets beyond the window contribute nothing.
    """
    q = conv1d(w, name + ".conv_q", x)
    k = conv1d(w, name + ".conv_k", context)
    v = conv1d(w, name + ".conv_v", context)
    batch, channels, t_q = q.shape
    t_k = k.shape[2]
    head_dim = channels // heads
    q = q.view(batch, heads, head_dim, t_q).transpose(2, 3) / math.sqrt(head_dim)
    k = k.view(batch, heads, head_dim, t_k).transpose(2, 3)
    v = v.view(batch, heads, head_dim, t_k).transpose(2, 3)
    scores = q @ k.transpose(2, 3)
    if window is not None:
        if t_q != t_k:
            raise ValueError("relative attention needs self-attention")
        offset, valid = _relative_index(t_q, window, q.device)
        rel_logits = q @ w[name + ".emb_rel_k"].transpose(1, 2)  # (b, h, t, 2w+1)
        scores = scores + rel_logits.gather(3, offset.expand(batch, heads, -1, -1)) * valid
    probs = torch.softmax(scores, dim=-1)
    out = probs @ v
    if window is not None:
        # Each query's weight on the key at each offset; keys outside the sequence count 0.
        pos = torch.arange(t_q, device=q.device)
        key_at = pos[:, None] + torch.arange(-window, window + 1, device=q.device)[None, :]
        in_range = (key_at >= 0) & (key_at < t_q)
        by_offset = probs.gather(3, key_at.clamp(0, t_q - 1).expand(batch, heads, -1, -1)) * in_range
        out = out + by_offset @ w[name + ".emb_rel_v"]
    out = out.transpose(2, 3).reshape(batch, channels, t_q)
    return conv1d(w, name + ".conv_o", out)


def _same_pad(x: torch.Tensor, kernel: int) -> torch.Tensor:
    return F.pad(x, ((kernel - 1) // 2, kernel // 2)) if kernel > 1 else x


def transformer_encoder(
    w: Weights, name: str, x: torch.Tensor, layers: int, heads: int, kernel: int, window: int = 4
) -> torch.Tensor:
    """VITS's post-LN encoder: relative self-attention, then a two-conv ReLU FFN, each residual."""
    for i in range(layers):
        x = channel_layer_norm(
            w, f"{name}.norm_layers_1.{i}", x + attention(w, f"{name}.attn_layers.{i}", x, x, heads, window)
        )
        ffn = f"{name}.ffn_layers.{i}"
        y = torch.relu(conv1d(w, ffn + ".conv_1", _same_pad(x, kernel)))
        y = conv1d(w, ffn + ".conv_2", _same_pad(y, kernel))
        x = channel_layer_norm(w, f"{name}.norm_layers_2.{i}", x + y)
    return x


def gated_activation(x: torch.Tensor, cond: torch.Tensor, channels: int) -> torch.Tensor:
    """WaveNet's gate: ``tanh(a) * sigmoid(b)`` over the two halves of ``x + cond``."""
    total = x + cond
    return torch.tanh(total[:, :channels]) * torch.sigmoid(total[:, channels:])


def wavenet(w: Weights, name: str, x: torch.Tensor, g: torch.Tensor, layers: int, kernel: int) -> torch.Tensor:
    """The non-causal WaveNet inside a coupling layer (dilation 1 in SoVITS), conditioned on ``g``."""
    hidden = x.shape[1]
    cond = conv1d(w, name + ".cond_layer", g)
    output = torch.zeros_like(x)
    for i in range(layers):
        x_in = conv1d(w, f"{name}.in_layers.{i}", x, padding=(kernel - 1) // 2)
        acts = gated_activation(x_in, cond[:, 2 * hidden * i : 2 * hidden * (i + 1)], hidden)
        res_skip = conv1d(w, f"{name}.res_skip_layers.{i}", acts)
        if i < layers - 1:
            x = x + res_skip[:, :hidden]
            output = output + res_skip[:, hidden:]
        else:
            output = output + res_skip
    return output


def flow_reverse(
    w: Weights, name: str, z: torch.Tensor, g: torch.Tensor, flows: int, wn_layers: int, kernel: int
) -> torch.Tensor:
    """Run a stack of mean-only affine couplings (each followed by a channel flip) backwards."""
    half = z.shape[1] // 2
    for i in reversed(range(flows)):
        z = torch.flip(z, [1])
        coupling = f"{name}.flows.{2 * i}"
        x0, x1 = z[:, :half], z[:, half:]
        h = conv1d(w, coupling + ".pre", x0)
        h = wavenet(w, coupling + ".enc", h, g, wn_layers, kernel)
        z = torch.cat([x0, x1 - conv1d(w, coupling + ".post", h)], dim=1)
    return z


def lift_convolutions(weights: Weights, prefix: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix`` in ``dtype``, every convolution kernel ``(out, in, k)`` lifted to
    ``(out, in, 1, k)`` in channels-last order: what :func:`hifigan` reads.

    HiFi-GAN's 1-D convolutions run as 2-D ones of height one over channels-last tensors, which
    oneDNN runs without reordering between layers: measured 1.46x faster in fp32 and in bf16 on
    a v2-size generator (128 latent frames, 2 threads), the same samples to float rounding."""
    lifted: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if not name.startswith(prefix):
            continue
        tensor = tensor.to(dtype)
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        lifted[name] = tensor
    return lifted


def hifigan(
    w: Weights,
    name: str,
    x: torch.Tensor,
    g: torch.Tensor | None,
    upsample_rates: Sequence[int],
    upsample_kernels: Sequence[int],
    resblock: str,
    resblock_kernels: Sequence[int],
    resblock_dilations: Sequence[Sequence[int]],
) -> torch.Tensor:
    """HiFi-GAN generator: latent frames ``(batch, channels, frames)`` to audio ``(batch, 1, samples)``,
    in the dtype of ``w``, which :func:`lift_convolutions` made."""
    if w[name + ".conv_pre.weight"].dim() != 4:
        raise ValueError("hifigan reads weights lifted by lift_convolutions")
    x = _lift(x)
    x = _conv(w, name + ".conv_pre", x, padding=3)
    if g is not None:
        x = x + _conv(w, name + ".cond", _lift(g))
    n_kernels = len(resblock_kernels)
    for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernels, strict=True)):
        x = F.leaky_relu(x, LRELU_SLOPE)
        x = F.conv_transpose2d(
            x,
            w[f"{name}.ups.{i}.weight"],
            w.get(f"{name}.ups.{i}.bias"),
            stride=(1, rate),
            padding=(0, (kernel - rate) // 2),
        )
        total = None
        for j, (rk, dilations) in enumerate(zip(resblock_kernels, resblock_dilations, strict=True)):
            y = _resblock(w, f"{name}.resblocks.{i * n_kernels + j}", x, resblock, rk, dilations)
            total = y if total is None else total + y
        assert total is not None
        x = total / n_kernels
    x = _conv(w, name + ".conv_post", F.leaky_relu(x), padding=3)
    return torch.tanh(x)[:, :, 0]


def _lift(x: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, length)`` as ``(batch, channels, 1, length)``, channels-last."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _conv(w: Weights, name: str, x: torch.Tensor, padding: int = 0, dilation: int = 1) -> torch.Tensor:
    """A lifted ``Conv1d`` named ``name`` over a lifted ``x``."""
    return F.conv2d(x, w[name + ".weight"], w.get(name + ".bias"), padding=(0, padding), dilation=(1, dilation))


def _resblock(w: Weights, name: str, x: torch.Tensor, kind: str, kernel: int, dilations: Sequence[int]) -> torch.Tensor:
    if kind == "1":
        for j, d in enumerate(dilations):
            y = _conv(w, f"{name}.convs1.{j}", F.leaky_relu(x, LRELU_SLOPE), padding=(kernel * d - d) // 2, dilation=d)
            y = _conv(w, f"{name}.convs2.{j}", F.leaky_relu(y, LRELU_SLOPE), padding=(kernel - 1) // 2)
            x = x + y
        return x
    for j, d in enumerate(dilations):
        x = x + _conv(w, f"{name}.convs.{j}", F.leaky_relu(x, LRELU_SLOPE), padding=(kernel * d - d) // 2, dilation=d)
    return x


def hifigan_reach(
    upsample_rates: Sequence[int],
    upsample_kernels: Sequence[int],
    resblock: str,
    resblock_kernels: Sequence[int],
    resblock_dilations: Sequence[Sequence[int]],
) -> int:
    """How many latent frames on either side of a frame :func:`hifigan` reads to make that frame's
    samples: an upper bound on its receptive field (the convolutions' full span, not the part
    that matters in practice).  An output sample is the same whatever lies further away, so a
    window that starts this many frames before the audio it keeps gives that audio as a
    decode of the whole utterance does.  ``conv_pre`` and ``conv_post`` have kernel 7."""
    if resblock == "1":
        per_resblock = [
            sum((k - 1) // 2 * (d + 1) for d in ds) for k, ds in zip(resblock_kernels, resblock_dilations, strict=True)
        ]
    else:
        per_resblock = [
            sum((k - 1) // 2 * d for d in ds) for k, ds in zip(resblock_kernels, resblock_dilations, strict=True)
        ]
    reach = 3  # conv_post, in samples at the output rate
    for rate, kernel in reversed(list(zip(upsample_rates, upsample_kernels, strict=True))):
        reach += max(per_resblock)
        padding = (kernel - rate) // 2
        # An output n of the transposed convolution reads the inputs m with n = m * rate - padding + t,
        # 0 <= t < kernel: at most ceil((reach + kernel - 1 - padding) / rate) inputs before n's own.
        reach = -(-(reach + max(kernel - 1 - padding, padding)) // rate)
    return reach + 3  # conv_pre


def style_encoder(w: Weights, name: str, spec: torch.Tensor, heads: int = 2, kernel: int = 5) -> torch.Tensor:
    """The reference encoder (``MelStyleEncoder``): a spectrogram ``(batch, bins, frames)`` to a
    speaker/style vector ``(batch, dim, 1)``, averaged over time."""
    x = spec.transpose(1, 2)
    x = F.mish(linear(w, name + ".spectral.0.fc", x))
    x = F.mish(linear(w, name + ".spectral.3.fc", x))
    x = x.transpose(1, 2)
    for i in range(2):
        y = conv1d(w, f"{name}.temporal.{i}.conv1.conv", x, padding=(kernel - 1) // 2)
        half = y.shape[1] // 2
        x = x + y[:, :half] * torch.sigmoid(y[:, half:])
    x = x.transpose(1, 2)
    x = x + _style_self_attention(w, name + ".slf_attn", x, heads)
    x = linear(w, name + ".fc.fc", x)
    return x.mean(dim=1).unsqueeze(-1)


def _style_self_attention(w: Weights, name: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, frames, dim = x.shape
    head_dim = dim // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, frames, heads, head_dim).transpose(1, 2)

    q, k, v = (split(linear(w, f"{name}.{p}", x)) for p in ("w_qs", "w_ks", "w_vs"))
    # This encoder scales by the model width, not the head width.
    probs = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(dim), dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(batch, frames, dim)
    return linear(w, name + ".fc", out)


def linear_spectrogram(audio: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """Magnitude STFT ``(batch, n_fft // 2 + 1, frames)`` of ``(batch, samples)`` audio, reflect-padded
    by ``(n_fft - hop) / 2`` each side and not centred (SoVITS's reference spectrogram)."""
    pad = (n_fft - hop) // 2
    padded = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(
        padded,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=torch.hann_window(win, device=audio.device),
        center=False,
        return_complex=True,
    )
    return torch.sqrt(spec.real.square() + spec.imag.square() + 1e-8)

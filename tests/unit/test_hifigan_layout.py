"""HiFi-GAN run as 2-D convolutions of height one over channels-last tensors gives the audio of the
plain 1-D generator (written here independently, from the same weights)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from streamvox.bench.random_voice import write_sovits_checkpoint
from streamvox.engine.backends.gpt_sovits import vits_layers as L
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s2
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig, SoVITSDecoder

from tests.helpers.audio import snr_db


def _plain_hifigan(w: Mapping[str, torch.Tensor], x: torch.Tensor, g: torch.Tensor, c: SoVITSConfig) -> torch.Tensor:
    """The generator as 1-D convolutions over ``(batch, channels, length)``: the reference."""

    def conv(name: str, x: torch.Tensor, padding: int = 0, dilation: int = 1) -> torch.Tensor:
        return F.conv1d(x, w[name + ".weight"], w.get(name + ".bias"), padding=padding, dilation=dilation)

    x = conv("dec.conv_pre", x, 3) + conv("dec.cond", g)
    kernels = c.resblock_kernel_sizes
    for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes, strict=True)):
        up = w[f"dec.ups.{i}.weight"], w[f"dec.ups.{i}.bias"]
        x = F.conv_transpose1d(F.leaky_relu(x, 0.1), *up, stride=rate, padding=(kernel - rate) // 2)
        outs = []
        for j, (k, dilations) in enumerate(zip(kernels, c.resblock_dilation_sizes, strict=True)):
            y = x
            for m, d in enumerate(dilations):
                name = f"dec.resblocks.{i * len(kernels) + j}"
                h = conv(f"{name}.convs1.{m}", F.leaky_relu(y, 0.1), (k * d - d) // 2, d)
                y = y + conv(f"{name}.convs2.{m}", F.leaky_relu(h, 0.1), (k - 1) // 2)
            outs.append(y)
        x = sum(outs) / len(outs)
    return torch.tanh(conv("dec.conv_post", F.leaky_relu(x), 3))


@pytest.fixture(scope="module")
def s2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("s2") / "tiny.pth"
    write_sovits_checkpoint(path, SoVITSConfig.tiny(), seed=11)
    return path


def test_the_lifted_generator_gives_the_plain_generators_audio(s2: Path) -> None:
    c = SoVITSConfig.tiny()
    weights = L.fold_weight_norm(load_s2(s2).weights)
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, c.inter_channels, 37, generator=gen)
    g = torch.randn(2, c.gin_channels, 1, generator=gen)
    args = (c.upsample_rates, c.upsample_kernel_sizes, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes)
    lifted = L.hifigan(L.lift_convolutions(weights, "dec.", torch.float32), "dec", z, g, *args)
    plain = _plain_hifigan(weights, z, g, c)
    assert lifted.shape == plain.shape == (2, 1, 37 * c.samples_per_frame)
    assert snr_db(plain.numpy(), lifted.numpy()) > 100


def test_weights_not_lifted_are_refused(s2: Path) -> None:
    c = SoVITSConfig.tiny()
    weights = L.fold_weight_norm(load_s2(s2).weights)
    args = (c.upsample_rates, c.upsample_kernel_sizes, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes)
    with pytest.raises(ValueError, match="lift_convolutions"):
        L.hifigan(weights, "dec", torch.zeros(1, c.inter_channels, 4), None, *args)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_decoder_keeps_one_lifted_channels_last_copy(s2: Path, bf16: bool) -> None:
    decoder = SoVITSDecoder.load(s2, bf16_vocoder=bf16)
    assert not any(name.startswith("dec.") for name in decoder.weights)
    kernels = [t for t in decoder.vocoder_weights.values() if t.dim() == 4]
    assert kernels and all(t.is_contiguous(memory_format=torch.channels_last) for t in kernels)
    assert {t.dtype for t in decoder.vocoder_weights.values()} == {torch.bfloat16 if bf16 else torch.float32}

"""HiFi-GAN's receptive field, and SoVITS windows that run HiFi-GAN only where their audio is kept.

Random weights in the real s2 format (``bench/random_voice.py``): the receptive field is a
property of the layer shapes, and the equalities hold for any weights."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from streamvox.bench.random_voice import write_sovits_checkpoint
from streamvox.engine.backends.gpt_sovits import vits_layers as L
from streamvox.engine.backends.gpt_sovits.vits import VOCODER_BUCKET_TOKENS, SoVITSConfig, SoVITSDecoder

from tests.helpers.audio import snr_db

CONFIGS = {"tiny": SoVITSConfig.tiny(), "v2": SoVITSConfig()}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SoVITSDecoder:
    path = tmp_path_factory.mktemp("s2") / f"{request.param}.pth"
    write_sovits_checkpoint(path, CONFIGS[request.param], seed=5)
    return SoVITSDecoder.load(path)


def _reach(c: SoVITSConfig) -> int:
    return L.hifigan_reach(
        c.upsample_rates, c.upsample_kernel_sizes, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes
    )


def test_the_reach_bounds_the_frames_one_frame_changes_and_is_tight(decoder: SoVITSDecoder) -> None:
    """Changing latent frame 40 changes the samples of frames 40 - r .. 40 + r and no others;
    the computed reach is at least r and at most one frame more."""
    c = decoder.config
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, c.inter_channels, 80, generator=gen)
    g = torch.randn(1, c.gin_channels, 1, generator=gen)

    def vocode(latent: torch.Tensor) -> torch.Tensor:
        args = (c.upsample_rates, c.upsample_kernel_sizes, c.resblock, c.resblock_kernel_sizes)
        return L.hifigan(decoder.vocoder_weights, "dec", latent, g, *args, c.resblock_dilation_sizes)[0, 0]

    moved = z.clone()
    moved[:, :, 40] += 1.0
    changed = torch.nonzero(vocode(moved) != vocode(z)).flatten()
    spf = c.samples_per_frame
    left = 40 - int(changed.min()) // spf
    right = int(changed.max()) // spf - 40
    assert left > 0 and right > 0
    assert max(left, right) <= _reach(c) <= max(left, right) + 1


@pytest.mark.parametrize("keep_from", [0, 3, 17, 24, 40, 61, 63])
def test_a_window_kept_from_a_token_is_the_whole_window_from_there(decoder: SoVITSDecoder, keep_from: int) -> None:
    gen = np.random.default_rng(keep_from)
    codes = gen.integers(0, 1024, 64).tolist()
    phonemes = torch.tensor(gen.integers(0, 700, 20))
    speaker = torch.randn(1, 512, 1, generator=torch.Generator().manual_seed(1)) * 0.1
    whole = decoder.decode(codes, phonemes, speaker, seed=2, first_token=30).numpy()
    kept = decoder.decode(codes, phonemes, speaker, seed=2, first_token=30, keep_from=keep_from).numpy()
    spt = decoder.config.samples_per_token
    assert kept.shape == ((64 - keep_from) * spt,)
    np.testing.assert_allclose(kept, whole[keep_from * spt :], atol=1e-5)
    assert snr_db(whole[keep_from * spt :], kept) > 100


def test_hifigan_starts_its_reach_before_the_kept_audio_on_a_bucket_multiple() -> None:
    c = SoVITSConfig()
    reach = c.vocoder_reach_tokens
    assert reach == -(-_reach(c) // 2) == 6
    assert c.vocoder_start(64, 0) == 0
    assert c.vocoder_start(64, reach) == 0, "the whole reach lies in the window"
    for tokens, keep_from in ((64, 30), (128, 100), (80, 79), (40, 10)):
        start = c.vocoder_start(tokens, keep_from)
        assert start <= keep_from - reach
        assert (tokens - start) % VOCODER_BUCKET_TOKENS == 0 or start == 0
        assert keep_from - reach - start < VOCODER_BUCKET_TOKENS
    assert c.vocoder_start(128, 100) == 128 - 48, "94 to 128 is 34 tokens: 48 from 80"


def test_hifigan_runs_only_over_the_kept_audio_and_its_reach(
    decoder: SoVITSDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames: list[int] = []
    real = L.hifigan

    def counting(w: L.Weights, name: str, x: torch.Tensor, *args: object) -> torch.Tensor:
        frames.append(x.shape[2])
        return real(w, name, x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(L, "hifigan", counting)
    speaker = torch.zeros(1, 512, 1)
    decoder.decode(list(range(96)), [1, 2, 3], speaker, keep_from=60)
    decoder.decode(list(range(96)), [1, 2, 3], speaker)
    fpt = decoder.config.frames_per_token
    assert frames == [(96 - decoder.config.vocoder_start(96, 60)) * fpt, 96 * fpt]
    assert frames[0] < frames[1]
    with pytest.raises(ValueError, match="keep_from"):
        decoder.decode(list(range(8)), [1], speaker, keep_from=9)


def test_the_reach_of_type_two_resblocks_bounds_what_one_frame_changes(decoder: SoVITSDecoder) -> None:
    """Type-2 resblocks have one convolution per dilation: a shorter reach than type 1's, still
    a bound (their weights here: the type-1 blocks' first convolutions)."""
    c = dataclasses.replace(decoder.config, resblock="2")
    weights = dict(decoder.vocoder_weights)
    for name in [n for n in weights if ".convs1." in n]:
        weights[name.replace(".convs1.", ".convs.")] = weights[name]
    assert _reach(c) < _reach(decoder.config)
    z = torch.randn(1, c.inter_channels, 60, generator=torch.Generator().manual_seed(3))
    g = torch.zeros(1, c.gin_channels, 1)
    args = (c.upsample_rates, c.upsample_kernel_sizes, c.resblock, c.resblock_kernel_sizes, c.resblock_dilation_sizes)
    moved = z.clone()
    moved[:, :, 30] -= 1.0
    changed = torch.nonzero(L.hifigan(weights, "dec", moved, g, *args) != L.hifigan(weights, "dec", z, g, *args))
    left = 30 - int(changed[:, 2].min()) // c.samples_per_frame
    assert 0 < left <= _reach(c) <= left + 1

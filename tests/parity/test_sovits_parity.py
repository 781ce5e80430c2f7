"""Our SoVITS v2 decoder against GPT-SoVITS's own ``SynthesizerTrn`` on a tiny seeded s2 checkpoint.

The checkpoint is written by the reference in the released format (fp16 weights, ``enc_q``
dropped, header bytes ``04``) and loaded by both sides.  Each test must fail if our
decoder diverges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamvox.engine.backends.gpt_sovits.checkpoint import CheckpointError
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig, SoVITSDecoder, frame_noise

from tests.helpers.gsv_runner import reference
from tests.helpers.sovits import TINY_HPS, TINY_HUBERT, reference_audio

pytestmark = pytest.mark.reference

CODES = [3, 1000, 17, 512, 64, 900, 255, 0, 42, 7, 1023, 300, 128, 77, 5, 600, 31, 222, 444, 888]
TEXT = [5, 17, 300, 42, 99, 731, 3, 250, 12]


@pytest.fixture(scope="module")
def tiny_s2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("s2")
    path = tmp / "tiny-v2.pth"
    reference({"op": "make_s2", "hps": TINY_HPS, "seed": 11, "checkpoint": str(path)}, tmp)
    return path


def test_the_checkpoint_is_in_the_released_format_and_loads(tiny_s2: Path) -> None:
    assert tiny_s2.read_bytes()[:2] == b"04"
    decoder = SoVITSDecoder.load(tiny_s2)
    assert decoder.config == SoVITSConfig.tiny()
    assert decoder.config.samples_per_token == 1280
    assert not any(name.startswith("enc_q") for name in decoder.weights)


def test_decode_equals_the_reference(tiny_s2: Path, tmp_path: Path) -> None:
    audio = reference_audio()
    frames = 2 * len(CODES)
    noise = frame_noise(5, 0, frames, 192)
    ref = reference(
        {
            "op": "sovits",
            "checkpoint": str(tiny_s2),
            "audio": audio.tolist(),
            "codes": CODES,
            "text": TEXT,
            "noise": noise.numpy().tolist(),
            "noise_scale": 0.5,
        },
        tmp_path,
    )
    decoder = SoVITSDecoder.load(tiny_s2)
    spectrogram = decoder.reference_spectrogram(audio)
    np.testing.assert_allclose(spectrogram.numpy(), ref["spectrogram"], rtol=1e-4, atol=1e-4)
    speaker = decoder.speaker(torch.from_numpy(ref["spectrogram"]))
    np.testing.assert_allclose(speaker.numpy(), ref["speaker"], atol=1e-5)

    codes = torch.tensor([CODES])
    mean, log_scale = decoder.encode(codes, decoder.encode_text(torch.tensor([TEXT])), speaker)
    np.testing.assert_allclose(mean.numpy(), ref["mean"], atol=1e-4)
    np.testing.assert_allclose(log_scale.numpy(), ref["log_scale"], atol=1e-4)

    silent = decoder.decode(CODES, TEXT, speaker, noise_scale=0.0)
    assert silent.shape == (len(CODES) * 1280,) == ref["silent"].shape
    assert float(np.abs(ref["silent"]).max()) > 0.05, "the test voice is too quiet to prove anything"
    np.testing.assert_allclose(silent.numpy(), ref["silent"], atol=1e-4)

    noisy = decoder.synthesize(mean, log_scale, noise.unsqueeze(0), speaker, 0.5)[0]
    assert float(np.abs(noisy.numpy() - silent.numpy()).max()) > 1e-2, "noise must change the audio"
    np.testing.assert_allclose(noisy.numpy(), ref["noisy"], atol=1e-4)


def test_frame_noise_depends_only_on_the_absolute_frame() -> None:
    whole = frame_noise(9, 0, 300, 4)
    for start, length in ((0, 1), (63, 2), (64, 64), (100, 150), (299, 1)):
        assert torch.equal(frame_noise(9, start, length, 4), whole[:, start : start + length])
    assert not torch.equal(frame_noise(10, 0, 300, 4), whole)


def test_v2pro_and_other_versions_are_refused(tiny_s2: Path) -> None:
    with pytest.raises(ValueError, match="only SoVITS v2"):
        SoVITSConfig.from_checkpoint({"model": {**TINY_HPS["model"], "version": "v4"}, "data": TINY_HPS["data"]})
    weights = SoVITSDecoder.load(tiny_s2).weights
    with pytest.raises(ValueError, match="v2Pro"):
        SoVITSDecoder({**weights, "sv_emb.weight": torch.zeros(512, 20480)}, SoVITSConfig.tiny())


def test_a_code_carrying_s2_file_is_refused(tmp_path: Path) -> None:
    import pickle

    class Payload:
        def __reduce__(self) -> tuple:
            return (print, ("ran",))

    path = tmp_path / "evil.pth"
    path.write_bytes(b"04" + pickle.dumps({"weight": Payload()}, protocol=2)[2:])
    with pytest.raises(CheckpointError):
        SoVITSDecoder.load(path)


def test_reference_tokens_from_cnhubert_equal_upstreams(tiny_s2: Path, tmp_path: Path) -> None:
    from streamvox.engine.backends.gpt_sovits.cnhubert import CNHubert, reference_tokens

    hubert_dir = tmp_path / "hubert"
    reference({"op": "make_hubert", "config": TINY_HUBERT, "seed": 4, "directory": str(hubert_dir)}, tmp_path)
    audio = reference_audio(3.2, 16000)
    varied = np.random.default_rng(2).standard_normal((1, 768, 60)).astype(np.float32)
    job = {
        "op": "hubert",
        "directory": str(hubert_dir),
        "checkpoint": str(tiny_s2),
        "audio": audio.tolist(),
        "varied_features": varied.tolist(),
    }
    ref = reference(job, tmp_path)
    hubert = CNHubert.load(hubert_dir)
    padded = np.concatenate([audio, np.zeros(9600, np.float32)])
    features = hubert.features(padded)
    np.testing.assert_allclose(features.numpy(), ref["features"], atol=1e-4)
    assert features.shape[2] == 189  # 50 frames per second of 16 kHz audio, less the convolutions' edges
    decoder = SoVITSDecoder.load(tiny_s2)
    tokens = reference_tokens(hubert, decoder.semantic_tokens, audio)
    assert len(tokens) == len(ref["tokens"]) == 189 // 2  # ssl_proj: stride 2, to 25 Hz
    assert tokens == ref["tokens"].tolist()
    # A random tiny HuBERT gives similar features for every frame; random features test the quantiser.
    varied_tokens = decoder.semantic_tokens(torch.from_numpy(varied))
    assert len(set(varied_tokens)) > 20, "a degenerate test: every frame quantised alike"
    assert varied_tokens == ref["varied_tokens"].tolist()
    with pytest.raises(ValueError, match="3 to 10 s"):
        reference_tokens(hubert, decoder.semantic_tokens, audio[:16000])


def test_bf16_vocoder_stays_close_to_fp32(tiny_s2: Path) -> None:
    fp32 = SoVITSDecoder.load(tiny_s2)
    bf16 = SoVITSDecoder.load(tiny_s2, bf16_vocoder=True)
    speaker = fp32.speaker(fp32.reference_spectrogram(reference_audio()))
    exact = fp32.decode(CODES, TEXT, speaker, seed=1).numpy()
    close = bf16.decode(CODES, TEXT, speaker, seed=1).numpy()
    assert close.dtype == np.float32 and close.shape == exact.shape
    snr = 10 * np.log10(np.sum(exact**2) / np.sum((close - exact) ** 2))
    assert 25 < snr < 100, snr  # close, and not secretly the fp32 path

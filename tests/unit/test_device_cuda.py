"""The AR voices on a CUDA device: GPT-SoVITS's graph-replayed and compiled fixed-shape steps against
the CPU's variable step, bfloat16 beside float32, SoVITS's audio against the CPU's; a Dia voice's
greedy rows and streamed audio against the CPU's.

Skipped where torch sees no CUDA device (CI has none).  ``scripts/gpu_check.sh`` runs this file
on a GPU machine (``--noconftest``: the shared fixtures load the server, which needs libopus and
libsndfile, and a bare GPU machine has neither), so it imports nothing but numpy, torch and ours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamvox.bench.dia_voice import write_dia_voice
from streamvox.bench.random_voice import write_sovits_checkpoint, write_t2s_checkpoint
from streamvox.engine.ar.fixed_step import FixedShapeStep
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.dac import DacConfig
from streamvox.engine.backends.dia.voice import DiaVoice
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder
from streamvox.engine.backends.gpt_sovits.vits import SoVITSConfig, SoVITSDecoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

CFG = T2SConfig()  # the released size: kernels pick other paths for tiny widths
PHONEMES = torch.arange(5, 65) % 732


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("t2s") / "v2.ckpt"
    write_t2s_checkpoint(path, CFG, seed=7)
    return load_s1(path).weights


def run(decoder: T2SDecoder, stepper: object, steps: int = 40) -> list[torch.Tensor]:
    """Three streams; the middle one idles for the first ten steps. Every logits row, prefills included."""
    rows = [decoder.prefill(slot, PHONEMES, torch.arange(20 + slot, 170 + slot) % 1024) for slot in range(3)]
    for i in range(steps):
        live = [0, 2] if i < 10 else [0, 1, 2]
        tokens = torch.tensor([(97 * i + 31 * slot + 5) % 1024 for slot in live])
        rows.extend(stepper.step(torch.tensor(live), tokens))  # type: ignore[attr-defined]
    return rows


@pytest.mark.parametrize("mode", ["eager", "cuda-graph", "compile", "compile+cuda-graph"])
def test_float32_steps_on_the_gpu_follow_the_cpu(weights: dict[str, torch.Tensor], mode: str) -> None:
    cpu = T2SDecoder(weights, CFG, slots=3, max_len=256)
    expected = run(cpu, cpu)
    gpu = T2SDecoder(weights, CFG, slots=3, max_len=256, device="cuda")
    got = run(gpu, FixedShapeStep(gpu, mode))
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.device.type == "cpu" and ours.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-3)
    assert gpu.lengths.tolist() == cpu.lengths.tolist()


@pytest.mark.parametrize("mode", ["cuda-graph", "compile+cuda-graph"])
def test_bfloat16_graph_steps_follow_the_eager_bfloat16_step(weights: dict[str, torch.Tensor], mode: str) -> None:
    eager = T2SDecoder(weights, CFG, slots=3, max_len=256, device="cuda", dtype=torch.bfloat16)
    expected = run(eager, FixedShapeStep(eager, "eager"))
    graph = T2SDecoder(weights, CFG, slots=3, max_len=256, device="cuda", dtype=torch.bfloat16)
    got = run(graph, FixedShapeStep(graph, mode))
    worst = max(float((a - b).norm() / b.norm()) for a, b in zip(got, expected, strict=True))
    # bf16 keeps 8 mantissa bits: kernels chosen differently (fused, or under capture) round differently.
    # The float32 test above is the tight one.
    assert worst < 0.05, worst


def test_sovits_on_the_gpu_decodes_the_cpu_s_audio(tmp_path: Path) -> None:
    path = tmp_path / "s2.pth"
    write_sovits_checkpoint(path, SoVITSConfig(), seed=0)
    cpu, gpu = SoVITSDecoder.load(path), SoVITSDecoder.load(path, device="cuda")
    rate = cpu.config.sampling_rate
    reference = (0.3 * np.sin(2 * np.pi * 150 * np.arange(3 * rate) / rate)).astype(np.float32)
    codes, phonemes = list(range(100, 140)), list(range(5, 45))
    audio = []
    for sovits in (cpu, gpu):
        speaker = sovits.speaker(sovits.reference_spectrogram(reference))
        audio.append(sovits.decode(codes, phonemes, speaker, noise_scale=0.5, seed=3).numpy())
    assert audio[1].shape == audio[0].shape == (40 * cpu.config.samples_per_token,)
    error = float(np.sum((audio[1] - audio[0]) ** 2))
    assert 10 * np.log10(float(np.sum(audio[0] ** 2)) / max(error, 1e-30)) > 35  # dB (cuDNN may convolve in TF32)


@pytest.mark.parametrize("step", ["variable", "cuda-graph", "compile+cuda-graph"])
def test_a_dia_voice_on_the_gpu_speaks_as_on_the_cpu(tmp_path: Path, step: str) -> None:
    directory = write_dia_voice(tmp_path / "dia", DiaConfig.tiny(), DacConfig.tiny(), seed=0, eos_scale=0.0)
    audio, rows = [], []
    for device, mode in (("cpu", "variable"), ("cuda", step)):
        (directory / "voice.json").write_text(f'{{"max_rows": 64, "device": "{device}", "step": "{mode}"}}')
        voice = DiaVoice.load(directory)
        assert voice.cache.self_k[0].device.type == device
        request = voice.start_segment(0, 0, "[S1] Hello there.", seed=None, greedy=True)
        while request.generating:
            voice.step([request])
        audio.append(
            np.concatenate(
                [request.vocoder.decode() for _ in iter(request.vocoder.pending, False)] + [request.vocoder.finish()]
            )
        )
        rows.append(torch.stack(request.state.rows))
    assert torch.equal(rows[1], rows[0])
    np.testing.assert_allclose(audio[1], audio[0], atol=1e-3)

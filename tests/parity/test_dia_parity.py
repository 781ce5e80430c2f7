"""Our Dia model, sampler and DAC against transformers' own, on tiny seeded models in the real layout.

transformers (``.ref/transformers``, installed by ``scripts/setup.sh test``) runs in a child process:
see ``tests/reference/dia_reference.py``.  It writes each voice directory with ``save_pretrained``
and our :class:`DiaVoice` loads it, so the loading is tested too.  Each test must fail if our model
diverges: outputs are compared value by value, tokens exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from streamvox.engine.backends.dia.config import DiaConfig
from streamvox.engine.backends.dia.sampling import DiaDecodeState, DiaSampling
from streamvox.engine.backends.dia.text import speaker_text_ids
from streamvox.engine.backends.dia.voice import DiaVoice

from tests.helpers.dia_runner import dia_reference

pytestmark = pytest.mark.reference

TINY_MODEL = {
    "encoder": {
        "num_hidden_layers": 2,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 8,
        "intermediate_size": 64,
    },
    "decoder": {
        "num_hidden_layers": 2,
        "hidden_size": 48,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 12,
        "cross_num_attention_heads": 4,
        "cross_num_key_value_heads": 2,
        "cross_head_dim": 8,
        "cross_hidden_size": 32,
        "intermediate_size": 96,
        "max_position_embeddings": 512,
    },
    "delay_pattern": [0, 8, 9, 10, 11, 12, 13, 14, 15],
}
TINY_DAC = {"encoder_hidden_size": 4, "decoder_hidden_size": 64, "sampling_rate": 44100}
TEXT = "[S1] Hello there, how are you? [S2] Fine, thanks."


def make_voice(directory: Path, tmp_path: Path, seed: int = 0, eos_scale: float = 1.0, std: float = 0.3) -> Path:
    job = {
        "op": "make",
        "directory": str(directory),
        "model": TINY_MODEL,
        "dac": TINY_DAC,
        "seed": seed,
        "std": std,
        "eos_scale": eos_scale,
    }
    dia_reference(job, tmp_path)
    (directory / "voice.json").write_text(json.dumps({"max_streams": 3, "max_rows": 200, "max_text_bytes": 96}))
    return directory


@pytest.fixture(scope="module")
def voice_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dia")
    return make_voice(tmp / "voice", tmp)


@pytest.fixture(scope="module")
def voice(voice_dir: Path) -> DiaVoice:
    return DiaVoice.load(voice_dir)


def text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two texts right-padded to one length, as transformers batches them."""
    a, b = speaker_text_ids(TEXT), speaker_text_ids("[S1] Short.")
    ids = torch.zeros(2, len(a), dtype=torch.long)
    ids[0], ids[1, : len(b)] = torch.tensor(a), torch.tensor(b)
    mask = torch.zeros(2, len(a), dtype=torch.bool)
    mask[0], mask[1, : len(b)] = True, True
    return ids, mask


def test_the_config_is_read_from_the_transformers_layout(voice: DiaVoice) -> None:
    config = voice.network.config
    assert config.decoder.kv_heads == 2 and config.decoder.cross_kv_heads == 2 and config.encoder.head_dim == 8
    assert config.delay_pattern == (0, 8, 9, 10, 11, 12, 13, 14, 15)
    assert (config.eos, config.pad, config.bos) == (1024, 1025, 1026)
    assert voice.sample_rate == 44100 and voice.codec.config.hop == 512


def test_encoder_outputs_equal(voice: DiaVoice, voice_dir: Path, tmp_path: Path) -> None:
    ids, mask = text_batch()
    theirs = dia_reference({"op": "encode", "directory": str(voice_dir), "ids": ids, "mask": mask}, tmp_path)
    ours = voice.network.encode(ids, mask)
    assert torch.allclose(ours[mask], theirs["encoded"][mask], atol=1e-5)


def test_teacher_forced_logits_equal_through_the_cache_in_pieces(
    voice: DiaVoice, voice_dir: Path, tmp_path: Path
) -> None:
    ids, mask = text_batch()
    tokens = torch.randint(0, 1024, (2, 23, 9), generator=torch.Generator().manual_seed(5))
    tokens[:, 0] = 1026
    job = {"op": "teacher", "directory": str(voice_dir), "ids": ids, "mask": mask, "tokens": tokens}
    theirs = dia_reference(job, tmp_path)["logits"]
    network = voice.network
    cache = network.new_cache(2, 64, ids.shape[1])
    network.start(cache, [0, 1], network.encode(ids, mask), mask)
    pieces = [network.decode(cache, [0, 1], tokens[:, a:b]) for a, b in ((0, 9), (9, 10), (10, 23))]
    ours = torch.cat(pieces, dim=1)
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-5), (ours - theirs).abs().max()


def synthetic_logits(steps: int, eos_at: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random cond/uncond logits where channel 0's guided EOS wins from step ``eos_at`` on."""
    generator = torch.Generator().manual_seed(seed)
    cond = torch.randn(steps, 9, 1028, generator=generator) * 3
    uncond = torch.randn(steps, 9, 1028, generator=generator) * 3
    cond[eos_at:, 0, 1024] = 40.0
    uncond[eos_at:, 0, 1024] = 0.0
    return cond, uncond


@pytest.mark.parametrize(
    ("params", "eos_at", "clamp"),
    [
        (DiaSampling(max_rows=200), 6, True),
        (DiaSampling(top_p=0.8, top_k=10, guidance_scale=2.0, guidance_top_k=10, max_rows=200), 3, True),
        (
            DiaSampling(temperature=1.5, top_p=1.0, top_k=200, guidance_scale=4, guidance_top_k=200, max_rows=26),
            99,
            True,
        ),
        (DiaSampling(temperature=0.7, max_rows=200), 4, False),
    ],
    ids=["defaults", "tighter", "row-cap", "temperature-below-one"],
)
def test_logits_processing_equals_transformers(
    params: DiaSampling, eos_at: int, clamp: bool, voice: DiaVoice, voice_dir: Path, tmp_path: Path
) -> None:
    """Every step's probabilities, the EOS filter, forced EOS when channel 0's EOS wins and the
    countdown that forces it on each delayed channel (or at the row cap) included.  transformers
    has one ``top_k`` for both filters, so the cases give ``guidance_top_k`` the same value."""
    steps = 24
    cond, uncond = synthetic_logits(steps, eos_at, seed=eos_at)
    job = {
        "op": "process",
        "directory": str(voice_dir),
        "cond": cond,
        "uncond": uncond,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "guidance_scale": params.guidance_scale,
        "max_length": params.max_rows + 1,
        "rows_before": 1,
        "clamp": clamp,
    }
    theirs = dia_reference(job, tmp_path)["probs"].view(steps, 9, 1028)
    state = DiaDecodeState(voice.network.config, params)
    for step in range(steps):
        ours = state.probabilities(cond[step], uncond[step])
        assert torch.allclose(ours, theirs[step], atol=1e-6), (step, (ours - theirs[step]).abs().max())
        state.rows.append(torch.zeros(9, dtype=torch.long))
    forced = theirs[:, 1:, 1024] == 1.0
    if eos_at < steps:
        delays = torch.tensor([8, 9, 10, 11, 12, 13, 14, 15])
        expected = [(eos_at + d, c) for c, d in enumerate(delays, 1) if eos_at + d < steps]
        assert sorted(map(tuple, forced.nonzero().tolist())) == sorted((s, c - 1) for s, c in expected)


def test_a_temperature_below_one_is_honoured_where_transformers_clamps_it(
    voice: DiaVoice, voice_dir: Path, tmp_path: Path
) -> None:
    """transformers' ``generate`` raises a temperature below 1 to 1; nari-labs/dia applies it, and so
    do we (DESIGN §7): at 0.7 our probabilities equal transformers' chain with 0.7 kept, and differ
    from what its ``generate`` would use."""
    cond, uncond = synthetic_logits(1, 99, seed=1)
    base = {"op": "process", "directory": str(voice_dir), "cond": cond, "uncond": uncond, "top_p": 0.95}
    base.update({"top_k": 45, "guidance_scale": 3.0, "max_length": 201, "rows_before": 1, "temperature": 0.7})
    clamped = dia_reference({**base, "clamp": True}, tmp_path)["probs"].view(9, 1028)
    ours = DiaDecodeState(voice.network.config, DiaSampling(temperature=0.7)).probabilities(cond[0], uncond[0])
    at_one = DiaDecodeState(voice.network.config, DiaSampling(temperature=1.0)).probabilities(cond[0], uncond[0])
    assert torch.allclose(clamped, at_one, atol=1e-6)
    assert (ours - clamped).abs().max() > 1e-3


def generate_ours(voice: DiaVoice, text: str, params: DiaSampling, prompt: torch.Tensor | None) -> torch.Tensor:
    network = voice.network
    ids = torch.tensor(speaker_text_ids(text))
    encoder_in, mask = torch.stack([ids, torch.zeros_like(ids)]), torch.ones(2, len(ids), dtype=torch.bool)
    frames = 0 if prompt is None else len(prompt)
    cache = network.new_cache(2, params.max_rows + frames + 1, len(ids))
    network.start(cache, [0, 1], network.encode(encoder_in, mask), mask)
    state = DiaDecodeState(network.config, params, prompt=prompt)
    logits = network.decode(cache, [0, 1], torch.stack(state.rows)[None].expand(2, -1, -1))
    while True:
        state.choose(logits[0, -1], logits[1, -1])
        if state.done:
            return torch.stack(state.rows)
        logits = network.decode(cache, [0, 1], state.last_row.expand(2, 1, -1))


@pytest.mark.parametrize("with_prompt", [False, True], ids=["text", "audio-prompt"])
@pytest.mark.parametrize("eos_scale", [1.0, 6.0], ids=["to-the-cap", "own-eos"])
def test_greedy_generation_equals_transformers(
    with_prompt: bool, eos_scale: float, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every row, BOS and delay tail included, with and without an audio prompt (teacher-forced
    through the delay pattern), ending at the row cap or on channel 0's own EOS."""
    directory = make_voice(tmp_path / "voice", tmp_path, seed=2, eos_scale=eos_scale)
    voice = DiaVoice.load(directory)
    prompt = torch.randint(0, 1024, (7, 9), generator=torch.Generator().manual_seed(9)) if with_prompt else None
    ids = torch.tensor([speaker_text_ids(TEXT)])
    max_new = 60
    job = {
        "op": "generate",
        "directory": str(directory),
        "ids": ids,
        "max_new_tokens": max_new,
        "guidance_scale": 3.0,
        "guidance_top_k": 45,
    }
    if prompt is not None:
        job["prompt"] = prompt
    theirs = dia_reference(job, tmp_path)["rows"]
    ours = generate_ours(voice, TEXT, DiaSampling(temperature=0.0, max_rows=max_new), prompt)
    assert torch.equal(ours, theirs.long()), (ours != theirs).nonzero()[:5]
    own_eos = bool((ours[:, 0] == 1024).nonzero().numel()) and len(ours) < 1 + (7 if with_prompt else 0) + max_new
    assert own_eos == (eos_scale > 1.0)


def test_dac_decode_and_encode_equal_transformers(voice: DiaVoice, voice_dir: Path, tmp_path: Path) -> None:
    codes = torch.randint(0, 1024, (1, 9, 30), generator=torch.Generator().manual_seed(3))
    theirs = dia_reference({"op": "dac_decode", "directory": str(voice_dir / "dac"), "codes": codes}, tmp_path)
    ours = voice.codec.decode(codes)
    assert ours.shape == theirs["audio"].shape == (1, 30 * 512)
    assert torch.allclose(ours, theirs["audio"], atol=1e-5)
    audio = torch.randn(1, 9000, generator=torch.Generator().manual_seed(4)) * 0.3
    theirs = dia_reference({"op": "dac_encode", "directory": str(voice_dir / "dac"), "audio": audio}, tmp_path)
    assert torch.equal(voice.codec.encode(audio), theirs["codes"])


def test_a_voice_written_by_our_bench_loads_in_transformers(tmp_path: Path) -> None:
    """``bench/dia_voice.py`` writes the layout transformers reads: its teacher-forced logits equal ours."""
    from streamvox.bench.dia_voice import write_dia_voice
    from streamvox.engine.backends.dia.dac import DacConfig

    directory = write_dia_voice(tmp_path / "bench-voice", DiaConfig.tiny(), DacConfig.tiny(), seed=4, std=0.3)
    voice = DiaVoice.load(directory)
    ids = torch.tensor([speaker_text_ids(TEXT)])
    mask = torch.ones_like(ids, dtype=torch.bool)
    tokens = torch.randint(0, 1024, (1, 12, 9), generator=torch.Generator().manual_seed(6))
    job = {"op": "teacher", "directory": str(directory), "ids": ids, "mask": mask, "tokens": tokens}
    theirs = dia_reference(job, tmp_path)["logits"]
    cache = voice.network.new_cache(1, 16, ids.shape[1])
    voice.network.start(cache, [0], voice.network.encode(ids, mask), mask)
    assert torch.allclose(voice.network.decode(cache, [0], tokens), theirs, atol=1e-4, rtol=1e-5)

"""The fixed-shape T2S step (every slot, a mask, the whole cache width), eager and compiled, against
the variable step, with streams joining and leaving; the decoder in another dtype; the checks."""

from __future__ import annotations

import pytest
import torch
from streamvox.bench.random_voice import write_t2s_checkpoint
from streamvox.engine.ar.fixed_step import FixedShapeStep
from streamvox.engine.ar.generate import TokenModel
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder

CFG = T2SConfig.tiny()
PHONEMES = torch.tensor([5, 17, 300, 42, 99, 3, 250, 12])


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    path = tmp_path_factory.mktemp("t2s") / "tiny.ckpt"
    write_t2s_checkpoint(path, CFG, seed=7)
    return load_s1(path).weights


def scripted_run(decoder: T2SDecoder, model: TokenModel) -> list[torch.Tensor]:
    """Slots 0 and 2 start; 1 joins after four steps and idles for two; 0 leaves, and its slot is
    taken by a new stream; each step feeds every live slot a token that depends on the step and the slot.
    Returns every logits row, prefills included."""
    rows: list[torch.Tensor] = []

    def prefill(slot: int) -> None:
        rows.append(decoder.prefill(slot, PHONEMES + slot, torch.arange(3 + slot, 12 + 2 * slot)))

    def steps(live: list[int], count: int) -> None:
        for i in range(count):
            tokens = torch.tensor([(97 * i + 31 * slot + 5) % 1024 for slot in live])
            rows.extend(model.step(torch.tensor(live), tokens))

    prefill(0)
    prefill(2)
    steps([0, 2], 4)
    prefill(1)
    steps([0, 2], 2)  # slot 1 is live but takes no token (its stream is paused, say)
    steps([0, 1, 2], 3)
    decoder.release(0)
    steps([2, 1], 3)  # not in slot order, and not packed
    prefill(0)
    steps([0, 1, 2], 3)
    return rows


@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_the_fixed_step_gives_the_variable_step_s_logits(weights: dict[str, torch.Tensor], mode: str) -> None:
    reference = T2SDecoder(weights, CFG, slots=3, max_len=64)
    expected = scripted_run(reference, reference)
    decoder = T2SDecoder(weights, CFG, slots=3, max_len=64)
    got = scripted_run(decoder, FixedShapeStep(decoder, mode))
    assert len(got) == len(expected) == 4 + 2 * 4 + 2 * 2 + 3 * 3 + 2 * 3 + 3 * 3
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        assert int(ours.argmax()) == int(theirs.argmax())
    assert decoder.lengths.tolist() == reference.lengths.tolist()
    assert decoder.audio_lengths.tolist() == reference.audio_lengths.tolist()


def test_the_fixed_step_refuses_what_the_variable_step_refuses(weights: dict[str, torch.Tensor]) -> None:
    decoder = T2SDecoder(weights, CFG, slots=2, max_len=24)
    step = FixedShapeStep(decoder, "eager")
    decoder.prefill(0, PHONEMES, torch.arange(3, 12))  # 17 of 24 positions
    with pytest.raises(ValueError, match="twice"):
        step.step(torch.tensor([0, 0]), torch.tensor([1, 2]))
    for token in range(7):
        step.step(torch.tensor([0]), torch.tensor([token]))
    with pytest.raises(ValueError, match="cache length 24"):
        step.step(torch.tensor([0]), torch.tensor([1]))
    decoder.prefill(1, PHONEMES, torch.arange(3, 6))  # the full slot 0 does not stop slot 1
    assert step.step(torch.tensor([1]), torch.tensor([9])).shape == (1, CFG.vocab)


def test_modes_are_checked(weights: dict[str, torch.Tensor]) -> None:
    decoder = T2SDecoder(weights, CFG, slots=1, max_len=32)
    with pytest.raises(ValueError, match="step mode"):
        FixedShapeStep(decoder, "jit")
    with pytest.raises(ValueError, match="CUDA device"):
        FixedShapeStep(decoder, "cuda-graph")


def test_a_bfloat16_decoder_follows_the_float32_one(weights: dict[str, torch.Tensor]) -> None:
    """The dtype a GPU runs, here on the CPU: its cache and weights are bfloat16, its logits float32
    on the CPU, close to the float32 decoder's (bfloat16 keeps 8 bits of mantissa)."""
    wide = T2SDecoder(weights, CFG, slots=1, max_len=32)
    narrow = T2SDecoder(weights, CFG, slots=1, max_len=32, dtype=torch.bfloat16)
    assert narrow.k_cache.dtype == torch.bfloat16
    first = [d.prefill(0, PHONEMES, torch.arange(3, 12)) for d in (wide, narrow)]
    then = [d.step(torch.tensor([0]), torch.tensor([40])) for d in (wide, narrow)]
    for a, b in (first, [t[0] for t in then]):
        assert b.dtype == torch.float32 and b.device.type == "cpu"
        assert float((a - b).norm() / a.norm()) < 0.05
    with pytest.raises(ValueError, match="int8"):
        T2SDecoder(weights, CFG, int8=True, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        T2SDecoder(weights, CFG, dtype=torch.float64)

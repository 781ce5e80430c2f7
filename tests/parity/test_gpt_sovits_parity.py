"""Our AR core and T2S decoder against GPT-SoVITS's own modules, on tiny seeded real-format checkpoints.

The reference (``gpt-sovits-cpufast``, installed by ``scripts/setup.sh test`` into
``.ref/gpt-sovits``) runs in a subprocess: see ``tests/reference/gsv_reference.py``.
Each test must fail if our model or sampler diverges from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamvox.engine.ar.generate import TokenStream, advance, choose, generate
from streamvox.engine.ar.sampler import EosPolicy, SamplingParams, draw, logits_to_probs
from streamvox.engine.backends.gpt_sovits.checkpoint import load_s1
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig, T2SDecoder

from tests.helpers.gsv_runner import reference

pytestmark = pytest.mark.reference

TINY = {
    "model": {
        "hidden_dim": 32,
        "embedding_dim": 32,
        "head": 2,
        "n_layer": 2,
        "vocab_size": 1025,
        "phoneme_vocab_size": 732,
        "dropout": 0.0,
        "EOS": 1024,
    }
}
PHONEMES = [5, 17, 300, 42, 99, 731, 3, 250, 12, 64, 128, 7]
PROMPT = [11, 900, 35, 512, 77, 1023, 0, 64]


def tiny_checkpoint(tmp_path: Path, seed: int = 3, eos_scale: float = 1.0) -> Path:
    path = tmp_path / f"tiny-{seed}-{eos_scale}.ckpt"
    job = {"op": "make_t2s", "config": TINY, "seed": seed, "checkpoint": str(path), "eos_scale": eos_scale}
    reference(job, tmp_path)
    return path


def our_decoder(checkpoint: Path, slots: int = 1) -> T2SDecoder:
    loaded = load_s1(checkpoint)
    return T2SDecoder(loaded.weights, T2SConfig.from_checkpoint(loaded.config), slots=slots, max_len=256)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35),
        SamplingParams(top_k=5, top_p=0.7, temperature=0.8, repetition_penalty=1.2),
        SamplingParams(top_k=None, top_p=0.9, temperature=1.3, repetition_penalty=1.0),
    ],
)
def test_sampler_probs_and_draws_equal_the_reference(params: SamplingParams, tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 1025, generator=gen) * 3
    previous = torch.randint(0, 1024, (4, 9), generator=gen)
    noise = torch.empty(4, 1025).exponential_(1.0, generator=gen)
    ref = reference(
        {
            "op": "sample",
            "logits": logits.tolist(),
            "previous": previous.tolist(),
            "noise": noise.tolist(),
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "repetition_penalty": params.repetition_penalty,
        },
        tmp_path,
    )
    seen = torch.zeros(4, 1025, dtype=torch.bool).scatter(1, previous, True)
    probs = logits_to_probs(logits, seen, params)
    np.testing.assert_allclose(probs.numpy(), ref["probs"], atol=1e-6)
    assert draw(probs, noise).tolist() == ref["tokens"].tolist()


def test_teacher_forced_logits_equal_the_reference(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path)
    forced = [3, 800, 800, 15, 1023, 7, 64, 300, 2, 999, 41, 41, 5, 610, 88, 120, 9, 450, 31, 77]
    ref = reference(
        {"op": "teacher", "checkpoint": str(checkpoint), "phonemes": PHONEMES, "prompt": PROMPT, "forced": forced},
        tmp_path,
    )["logits"]
    decoder = our_decoder(checkpoint)
    ours = [decoder.prefill(0, torch.tensor(PHONEMES), torch.tensor(PROMPT))]
    for token in forced:
        ours.append(decoder.step(torch.tensor([0]), torch.tensor([token]))[0])
    np.testing.assert_allclose(torch.stack(ours).numpy(), ref, atol=1e-5, rtol=0)
    # The fixed-shape step over every slot (what is compiled or graph-captured) changes nothing.
    wide = our_decoder(checkpoint)
    wide.prefill(0, torch.tensor(PHONEMES), torch.tensor(PROMPT))
    for i, token in enumerate(forced):
        logits = wide.step_all(torch.tensor([token]), torch.tensor([True]))[0]
        np.testing.assert_allclose(logits.numpy(), ref[i + 1], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("eos_scale", "cap"), [(1.0, 40), (8.0, 60)])
def test_greedy_tokens_and_end_of_speech_equal_the_reference(eos_scale: float, cap: int, tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path, seed=4, eos_scale=eos_scale)
    params = SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=1.35)
    ref = reference(
        {
            "op": "generate",
            "checkpoint": str(checkpoint),
            "phonemes": PHONEMES,
            "prompt": PROMPT,
            "top_k": 1,
            "top_p": 1.0,
            "temperature": 1.0,
            "repetition_penalty": 1.35,
            "early_stop_num": cap,
        },
        tmp_path,
    )["tokens"].tolist()
    decoder = our_decoder(checkpoint)
    first = decoder.prefill(0, torch.tensor(PHONEMES), torch.tensor(PROMPT))
    stream = TokenStream.start(0, first, torch.tensor(PROMPT), params, seed=None)
    (tokens,) = generate(decoder, [stream], EosPolicy(eos=1024, max_steps=cap + 1))
    assert tokens == ref
    if eos_scale != 1.0:
        assert 11 <= len(tokens) < cap  # ended on end of speech, after the banned first steps
        # ... and the ban mattered: unbanned, end of speech led at one of the first 11 steps.
        replay = our_decoder(checkpoint)
        logits = replay.prefill(0, torch.tensor(PHONEMES), torch.tensor(PROMPT))
        leaders = []
        for token in tokens[:11]:
            leaders.append(int(torch.argmax(logits)))
            logits = replay.step(torch.tensor([0]), torch.tensor([token]))[0]
        assert 1024 in leaders
    else:
        assert len(tokens) == cap + 1  # ran to the step cap


def test_batched_streams_joining_late_equal_their_solo_runs(tmp_path: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path, seed=6)
    policy = EosPolicy(eos=1024, max_steps=30)
    params = SamplingParams()
    texts = [(PHONEMES, PROMPT, 1), (PHONEMES[::-1], PROMPT[:5], 2), (PHONEMES[:7], PROMPT[2:], 3)]

    def solo(phonemes: list[int], prompt: list[int], seed: int) -> list[int]:
        decoder = our_decoder(checkpoint)
        first = decoder.prefill(0, torch.tensor(phonemes), torch.tensor(prompt))
        return generate(decoder, [TokenStream.start(0, first, torch.tensor(prompt), params, seed)], policy)[0]

    expected = [solo(*t) for t in texts]
    decoder = our_decoder(checkpoint, slots=3)
    streams: list[TokenStream] = []
    for step in range(200):
        if step in (0, 4, 9):  # streams join between steps
            phonemes, prompt, seed = texts[len(streams)]
            slot = len(streams)
            first = decoder.prefill(slot, torch.tensor(phonemes), torch.tensor(prompt))
            streams.append(TokenStream.start(slot, first, torch.tensor(prompt), params, seed))
        live = [s for s in streams if not s.done]
        if not live and len(streams) == 3:
            break
        advance(decoder, live, [choose(s, policy) for s in live])
    assert [s.tokens for s in streams] == expected
    assert len({tuple(t) for t in expected}) == 3


def test_int8_weights_stay_close_to_fp32(tmp_path: Path) -> None:
    """The int8 option is a speed/accuracy trade: its logits track fp32's closely (not exactly)."""
    checkpoint = tiny_checkpoint(tmp_path, seed=8)
    loaded = load_s1(checkpoint)
    config = T2SConfig.from_checkpoint(loaded.config)
    runs = []
    for int8 in (False, True):
        decoder = T2SDecoder(loaded.weights, config, slots=1, max_len=256, int8=int8)
        logits = [decoder.prefill(0, torch.tensor(PHONEMES), torch.tensor(PROMPT))]
        for token in PROMPT * 2:
            logits.append(decoder.step(torch.tensor([0]), torch.tensor([token]))[0])
        runs.append(torch.stack(logits))
    fp32, int8 = runs
    assert not torch.equal(fp32, int8)  # it really is quantised
    for a, b in zip(fp32, int8, strict=True):
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.999

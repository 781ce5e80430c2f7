"""The token loop's batched sampling (``engine/ar/generate.py``): a batch of streams sampled
together gets, row for row, what each stream would get sampled alone."""

from __future__ import annotations

import copy

import pytest
import torch
from streamvox.engine.ar.generate import TokenStream, choose, choose_all
from streamvox.engine.ar.sampler import EosPolicy, SamplingParams

VOCAB = 1025
EOS = 1024
MIXED = [
    SamplingParams(),
    SamplingParams(top_k=1, repetition_penalty=1.0),
    SamplingParams(top_p=0.8, temperature=0.7),
    SamplingParams(top_k=None, repetition_penalty=1.1),
]


def _streams(count: int) -> list[TokenStream]:
    streams = []
    for index in range(count):
        gen = torch.Generator().manual_seed(100 + index)
        logits = torch.randn(VOCAB, generator=gen) * 3
        prompt = torch.randint(0, EOS, (40,), generator=gen)
        streams.append(TokenStream.start(index, logits, prompt, MIXED[index % len(MIXED)], seed=index))
    return streams


def _feed(streams: list[TokenStream], step: int) -> None:
    """New logits for every stream, with end of speech growing likelier as steps pass."""
    gen = torch.Generator().manual_seed(step)
    for stream in streams:
        logits = torch.randn(VOCAB, generator=gen) * 3
        logits[EOS] += (step - 25) * 0.3
        stream.logits = logits


def test_a_batch_samples_each_stream_as_it_would_be_sampled_alone() -> None:
    together = _streams(16)
    alone = copy.deepcopy(together)
    policies = [EosPolicy(eos=EOS, min_steps=5 + index % 3, max_steps=30 + index) for index in range(16)]
    ended_by = {"eos": 0, "cap": 0}
    for step in range(70):
        batched = choose_all(together, policies)
        single = [None if s.done else choose(s, policy) for s, policy in zip(alone, policies, strict=True)]
        assert batched == single, f"step {step}"
        _feed(together, step)
        _feed(alone, step)
    for a, b, policy in zip(together, alone, policies, strict=True):
        assert a.tokens == b.tokens and a.done and b.done
        assert torch.equal(a.seen, b.seen)
        ended_by["cap" if len(a.tokens) == policy.max_steps else "eos"] += 1
    assert ended_by["cap"] > 0 and ended_by["eos"] > 0  # both ways of ending were exercised


def test_ended_streams_get_none_and_draw_no_noise() -> None:
    streams = _streams(3)
    streams[1].done = True
    before = streams[1].generator.get_state()
    chosen = choose_all(streams, [EosPolicy(eos=EOS, min_steps=0)] * 3)
    assert chosen[1] is None and chosen[0] is not None and chosen[2] is not None
    assert torch.equal(streams[1].generator.get_state(), before)
    assert streams[1].tokens == []


def test_given_noise_replaces_the_draws() -> None:
    streams = _streams(2)
    for stream in streams:
        stream.params = SamplingParams(top_k=None, repetition_penalty=1.0)
        stream.logits = torch.zeros(VOCAB)
    noise = torch.ones(2, VOCAB)
    noise[0, 7] = 1e-6  # the smallest noise wins when every probability is equal
    noise[1, 300] = 1e-6
    assert choose_all(streams, [EosPolicy(eos=EOS, min_steps=50)] * 2, noise) == [7, 300]


def test_end_of_speech_is_banned_while_a_stream_is_young() -> None:
    streams = _streams(2)
    for stream in streams:
        stream.logits = torch.full((VOCAB,), -10.0)
        stream.logits[EOS] = 10.0
    policies = [EosPolicy(eos=EOS, min_steps=1), EosPolicy(eos=EOS, min_steps=0)]
    chosen = choose_all(streams, policies)
    assert chosen[0] is not None and not streams[0].done
    assert chosen[1] is None and streams[1].done


def test_one_policy_per_stream_is_required() -> None:
    with pytest.raises(ValueError, match="policies"):
        choose_all(_streams(2), [EosPolicy(eos=EOS)])

"""The token loop shared by autoregressive backends: sample, check for the end, feed back.

A backend provides ``prefill`` (its own inputs, returning the first logits)
and ``step(slots, tokens) -> logits`` over a static cache; this module keeps
each stream's sampling state (tokens seen, for the repetition penalty; its
noise generator; its tokens) and advances any set of streams together, so
streams can join and leave between steps.  Not thread-safe: the batched unit that
holds the streams (on one worker) owns them.

Per step and stream, in GPT-SoVITS's order: ban end of speech while the
stream is young; apply the repetition penalty (over the prompt and every token
so far); stop if the most likely token is end of speech; otherwise draw
(top-p, temperature, top-k, softmax, ``argmax(p / q)``) and stop if the draw
is end of speech or the step cap is reached.  The end token is never kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from streamvox.engine.ar.sampler import (
    EosPolicy,
    SamplingParams,
    apply_repetition_penalty,
    draw,
    exponential_noise,
    logits_to_probs,
)


class TokenModel(Protocol):
    """What the loop needs from a backend."""

    def step(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TokenStream:
    """One stream's sampling state."""

    slot: int
    params: SamplingParams
    seen: torch.Tensor
    """bool ``(vocab,)``: tokens of the prompt and generated so far."""
    logits: torch.Tensor
    """The logits for the next token."""
    generator: torch.Generator | None = None
    tokens: list[int] = field(default_factory=list)
    done: bool = False

    @classmethod
    def start(
        cls, slot: int, first_logits: torch.Tensor, prompt: torch.Tensor, params: SamplingParams, seed: int | None
    ) -> TokenStream:
        seen = torch.zeros(first_logits.shape[-1], dtype=torch.bool)
        seen[prompt.long()] = True
        generator = None
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        return cls(slot, params, seen, first_logits.detach().clone(), generator)


def choose(stream: TokenStream, policy: EosPolicy, noise: torch.Tensor | None = None) -> int | None:
    """Pick ``stream``'s next token (``None``: it ended without one); updates its state.

    ``noise`` (``(vocab,)``, Exponential(1)) replaces the stream's own draw noise (tests).
    """
    return choose_all([stream], [policy], None if noise is None else noise.unsqueeze(0))[0]


def choose_all(
    streams: Sequence[TokenStream], policies: Sequence[EosPolicy], noise: torch.Tensor | None = None
) -> list[int | None]:
    """Pick the next token of every stream (``None`` for one that ended, or had already ended).

    Streams that share sampling settings, end-of-speech token and minimum length are sampled
    as one batch of rows: each row gets the arithmetic :func:`choose` would give it alone
    (every operation is row-wise), so a stream's tokens do not depend on its neighbours, and a
    batch of 16 costs about as much as 2 alone.  Each stream still draws its noise from its
    own generator, in the order of ``streams``.  ``noise`` (``(len(streams), vocab)``)
    replaces those draws (tests).
    """
    if len(policies) != len(streams):
        raise ValueError(f"{len(streams)} streams but {len(policies)} policies")
    chosen: list[int | None] = [None] * len(streams)
    groups: dict[tuple[SamplingParams, int, int], list[int]] = {}
    for index, (stream, policy) in enumerate(zip(streams, policies, strict=True)):
        if not stream.done:
            groups.setdefault((stream.params, policy.eos, policy.min_steps), []).append(index)
    draws = {}
    for index, stream in enumerate(streams):
        if not stream.done:
            own = noise is None
            draws[index] = exponential_noise(tuple(stream.logits.shape), stream.generator) if own else noise[index]
    for (params, eos, min_steps), rows in groups.items():
        group = [streams[i] for i in rows]
        steps = torch.tensor([len(s.tokens) for s in group])
        logits = EosPolicy(eos=eos, min_steps=min_steps).mask_banned(torch.stack([s.logits for s in group]), steps)
        seen = torch.stack([s.seen for s in group])
        penalised = apply_repetition_penalty(logits, seen, params.repetition_penalty)
        most_likely = torch.argmax(penalised, dim=-1).tolist()
        probs = logits_to_probs(penalised, None, params)
        drawn = draw(probs, torch.stack([draws[i] for i in rows])).tolist()
        for index, stream, best, token in zip(rows, group, most_likely, drawn, strict=True):
            chosen[index] = _take(stream, policies[index], best, token)
    return chosen


def _take(stream: TokenStream, policy: EosPolicy, most_likely: int, token: int) -> int | None:
    """Record ``token`` on ``stream``, or end it: end of speech most likely or drawn ends it
    without a token; its ``max_steps``-th token ends it after that token."""
    if most_likely == policy.eos or token == policy.eos:
        stream.done = True
        return None
    stream.tokens.append(token)
    stream.seen[token] = True
    if policy.finished(most_likely, token, len(stream.tokens)):
        stream.done = True
    return token


def advance(model: TokenModel, streams: list[TokenStream], chosen: list[int | None]) -> None:
    """Feed each live stream its chosen token in one batched ``step``; store the next logits."""
    live = [(s, t) for s, t in zip(streams, chosen, strict=True) if t is not None and not s.done]
    if not live:
        return
    slots = torch.tensor([s.slot for s, _ in live])
    tokens = torch.tensor([t for _, t in live])
    logits = model.step(slots, tokens)
    for row, (stream, _) in enumerate(live):
        stream.logits = logits[row]


def generate(model: TokenModel, streams: list[TokenStream], policy: EosPolicy) -> list[list[int]]:
    """Run every stream to its end, all in one batch; return their tokens (offline use and tests)."""
    while not all(s.done for s in streams):
        chosen = choose_all(streams, [policy] * len(streams))
        advance(model, streams, chosen)
    return [s.tokens for s in streams]

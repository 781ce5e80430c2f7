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
    steps = torch.tensor([len(stream.tokens)])
    logits = policy.mask_banned(stream.logits.unsqueeze(0), steps)
    penalised = apply_repetition_penalty(logits, stream.seen.unsqueeze(0), stream.params.repetition_penalty)
    most_likely = torch.argmax(penalised, dim=-1)
    probs = logits_to_probs(penalised, None, stream.params)
    if noise is None:
        noise = exponential_noise(tuple(probs.shape[1:]), stream.generator)
    token = draw(probs, noise.unsqueeze(0))
    ended = policy.finished(most_likely, token, steps + 1)
    if bool(most_likely[0] == policy.eos) or bool(token[0] == policy.eos):
        stream.done = True
        return None
    value = int(token[0])
    stream.tokens.append(value)
    stream.seen[value] = True
    if bool(ended[0]):
        stream.done = True
    return value


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
        chosen = [None if s.done else choose(s, policy) for s in streams]
        advance(model, streams, chosen)
    return [s.tokens for s in streams]

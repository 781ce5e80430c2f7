"""Dia's logits processing, sampling and end-of-generation countdown, per request.

Each request's decoder rows give conditional and unconditional logits
``(channels, vocab)``.  In the order transformers' ``DiaGenerationMixin``
applies them (the reference we are tested against):

1. classifier-free guidance: ``g = cond + scale·(cond − uncond)``; the
   ``guidance_top_k`` best of ``g`` choose which *conditional* logits stay;
2. temperature (``0`` means greedy: the argmax of what steps 3-5 leave);
3. EOS filter: ids above EOS are banned everywhere and EOS on channels 1+;
   on channel 0, EOS is the only candidate if it is the most likely, and is
   banned otherwise;
4. top-k, then top-p (the token that crosses ``top_p`` is kept);
5. the countdown: once channel 0's most likely token is EOS (or the row cap
   is reached), channel ``c`` is forced to EOS ``delay[c]`` steps later;
6. softmax and draw, ``argmax(p / q)`` with ``q ~ Exponential(1)`` (the same
   law as a multinomial draw; ``q`` can be passed in by tests).

After the draw, a channel that has already ended gets PAD, and a row that the
delay pattern still covers for a channel gets what it fixes there: BOS for row
``t <= delay[c]``, then the cloning prompt's codes (:func:`delayed_prompt`).
Where nari-labs/dia differs on purpose (temperature < 1, CFG row layout, BOS at
row ``delay[c]``), we follow transformers; DESIGN §7 lists the differences.
Not thread-safe: one state per request, advanced by the unit that holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from streamvox.engine.ar.sampler import apply_top_k, apply_top_p, draw, exponential_noise
from streamvox.engine.backends.dia.config import DiaConfig


@dataclass(frozen=True)
class DiaSampling:
    """Per-request generation settings (Dia's published defaults)."""

    temperature: float = 1.2
    top_p: float = 0.95
    top_k: int | None = 45
    guidance_scale: float = 3.0
    guidance_top_k: int | None = 45
    max_rows: int = 3072
    """New decoder rows at most, the 15-row tail included (transformers' ``max_new_tokens``)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("top_k", "guidance_top_k"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: float, top_k: int | None) -> torch.Tensor:
    """Step 1 over ``(..., vocab)`` logits."""
    guided = cond + scale * (cond - uncond)
    if top_k is None:
        return guided
    keep = torch.zeros_like(guided, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(guided, min(top_k, guided.shape[-1]), dim=-1).indices, True)
    return cond.masked_fill(~keep, float("-inf"))


def filter_eos(logits: torch.Tensor, eos: int) -> torch.Tensor:
    """Step 3 over ``(channels, vocab)`` logits."""
    out = logits.clone()
    out[1:, eos:] = float("-inf")
    out[0, eos + 1 :] = float("-inf")
    eos_first = torch.argmax(out, dim=-1) == eos
    out[eos_first, :eos] = float("-inf")
    out[~eos_first, eos] = float("-inf")
    return out


class DiaDecodeState:
    """One request's rows, countdown and random state between steps."""

    def __init__(
        self, config: DiaConfig, params: DiaSampling, seed: int | None = None, prompt: torch.Tensor | None = None
    ) -> None:
        self.config = config
        self.params = params
        self.delays = torch.tensor(config.delay_pattern)
        self.remaining = self.delays.clone()
        self.ending = False
        self.ended = torch.zeros(config.decoder.channels, dtype=torch.bool)
        self.prompt_frames = 0 if prompt is None else len(prompt)
        self.forced = delayed_prompt(config, prompt)
        """Rows whose channels the BOS row and the prompt fix (PAD: not fixed)."""
        self.rows: list[torch.Tensor] = list(self.forced[: self.prompt_frames + 1])
        """Every decoder row so far as fed to the model: BOS, the prompt's rows, then generated rows."""
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    @property
    def done(self) -> bool:
        return bool(self.ended.all())

    @property
    def last_row(self) -> torch.Tensor:
        return self.rows[-1]

    def probabilities(self, cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
        """Steps 1-6 up to the softmax, for the next row: ``(channels, vocab)``; updates the countdown."""
        p = self.params
        logits = guide(cond.float(), uncond.float(), p.guidance_scale, p.guidance_top_k)
        if p.temperature > 0 and p.temperature != 1.0:
            logits = logits / p.temperature
        logits = filter_eos(logits, self.config.eos)
        if p.temperature > 0:
            logits = apply_top_p(apply_top_k(logits, p.top_k), p.top_p, keep_crossing=True)
        logits = self._count_down(logits)
        return torch.softmax(logits, dim=-1)

    def _count_down(self, logits: torch.Tensor) -> torch.Tensor:
        eos = self.config.eos
        at_cap = len(self.rows) == self.prompt_frames + self.params.max_rows - self.config.max_delay
        if bool(torch.argmax(logits[0]) == eos) or at_cap:
            self.ending = True
        if self.ending:
            forced = self.remaining == 0
            logits = logits.clone()
            logits[forced] = float("-inf")
            logits[forced, eos] = 0.0
            self.remaining = self.remaining - 1
        return logits

    def choose(self, cond: torch.Tensor, uncond: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The next row ``(channels,)`` as it will be fed back; appended to :attr:`rows`."""
        probs = self.probabilities(cond, uncond)
        if self.params.temperature == 0:
            tokens = torch.argmax(probs, dim=-1)
        else:
            if noise is None:
                noise = exponential_noise(tuple(probs.shape), self.generator)
            tokens = draw(probs, noise)
        cfg = self.config
        tokens = torch.where(self.ended, torch.full_like(tokens, cfg.pad), tokens)
        self.ended |= tokens == cfg.eos
        row = len(self.rows)
        if row < len(self.forced):
            tokens = torch.where(self.forced[row] != cfg.pad, self.forced[row], tokens)
        self.rows.append(tokens)
        return tokens

    def frames(self) -> torch.Tensor:
        """The generated audio frames the rows so far complete: ``(frames, channels)`` codes (channel
        ``c`` of frame ``f`` is row ``f + 1 + delay[c]``), after the prompt's and before channel 0's EOS."""
        rows = torch.stack(self.rows)
        count = len(self.rows) - 1 - self.config.max_delay
        eos_rows = (rows[:, 0] == self.config.eos).nonzero()
        if len(eos_rows):
            count = min(count, int(eos_rows[0]) - 1)
        if count <= self.prompt_frames:
            return torch.zeros(0, self.config.decoder.channels, dtype=torch.long)
        index = torch.arange(self.prompt_frames, count)[:, None] + 1 + self.delays[None, :]
        return torch.gather(rows, 0, index)


def delayed_prompt(config: DiaConfig, prompt: torch.Tensor | None) -> torch.Tensor:
    """The rows the delay pattern fixes: ``(1 + frames + max_delay, channels)``; channel ``c`` of row
    ``t`` is BOS for ``t <= delay[c]``, prompt frame ``t - delay[c] - 1`` after that, PAD (free) beyond."""
    frames = 0 if prompt is None else len(prompt)
    source = torch.arange(1 + frames + config.max_delay)[:, None] - torch.tensor(config.delay_pattern)[None, :]
    table = torch.full(source.shape, config.pad, dtype=torch.long)
    table[source <= 0] = config.bos
    if prompt is not None and frames:
        inside = (source >= 1) & (source <= frames)
        channels = torch.arange(config.decoder.channels).expand_as(source)
        table[inside] = prompt.long()[source[inside] - 1, channels[inside]]
    return table

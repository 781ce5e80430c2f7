"""A decode step over every cache slot at fixed shapes: eager, ``torch.compile``d, or replayed as a CUDA graph.

An AR backend's ``step(slots, tokens)`` (:class:`~streamvox.engine.ar.generate.TokenModel`)
takes any set of slots, so its shapes change from step to step and it reads
values back to the host; neither a compiler nor a CUDA graph can hold that.
A model that also offers ``step_all(tokens, active)`` (every slot, a mask of
those that take a token, shapes that never change, no read-back) can be
wrapped here instead.  :class:`FixedShapeStep` keeps device buffers for the
tokens and the mask, scatters a call's tokens into them, runs ``step_all``
(eager, compiled once, or as a captured CUDA graph replayed each step, which
removes the kernel-launch cost that dominates a small batch on a GPU) and
returns the called slots' logits, float32 on the CPU, so it is a drop-in
``TokenModel``.

A step costs the same for one live slot as for all of them, which is what a
GPU (bound by reading the weights) wants and a CPU does not: on a CPU the
variable-width ``step`` stays the default.

Not thread-safe: one step at a time (the backend's lane already runs one T2S
call per voice at a time).  Prefill and release stay the model's own, called
on it directly, outside the graph: they write the same cache tensors the
graph reads.
"""

from __future__ import annotations

from typing import Protocol

import torch

MODES = ("eager", "compile", "cuda-graph", "compile+cuda-graph")
"""``eager``: ``step_all`` as written; ``compile``: through ``torch.compile`` (inductor, fixed
shapes, whole graph); ``cuda-graph``: eager kernels captured once and replayed;
``compile+cuda-graph``: the compiled kernels captured and replayed."""


STEPS = ("variable", *MODES)
"""What a voice's ``step`` setting takes: ``variable`` (the backend's own step, whose width follows
the longest live slot) or one of :data:`MODES`."""


def check_step(step: str, device: str) -> None:
    """Raise ``ValueError`` unless ``step`` is one of :data:`STEPS` that ``device`` can run."""
    if step not in STEPS:
        raise ValueError(f"step must be one of {STEPS}, got {step!r}")
    if step.endswith("cuda-graph") and torch.device(device).type != "cuda":
        raise ValueError(f"step {step!r} needs a cuda device")


class FixedShapeModel(Protocol):
    """What :class:`FixedShapeStep` needs from a decoder.  A "slot" is one cache row: one stream
    of GPT-SoVITS, one of the two guidance rows of a Dia request."""

    slots: int
    max_len: int
    device: torch.device
    lengths: torch.Tensor
    """Positions filled per slot, on the device."""
    token_shape: tuple[int, ...]
    """One slot's input per step: ``()`` for one token, ``(channels,)`` for a row of codebooks."""

    def step_all(self, tokens: torch.Tensor, active: torch.Tensor) -> torch.Tensor: ...


class FixedShapeStep:
    """See the module docstring.  ``mode`` is one of :data:`MODES`; the CUDA-graph modes need a CUDA model."""

    def __init__(self, model: FixedShapeModel, mode: str = "compile", warm_steps: int = 2) -> None:
        if mode not in MODES:
            raise ValueError(f"step mode must be one of {MODES}, got {mode!r}")
        graph = mode.endswith("cuda-graph")
        if graph and model.device.type != "cuda":
            raise ValueError(f"a CUDA graph needs the model on a CUDA device, not {model.device}")
        self.model = model
        self.mode = mode
        self._tokens = torch.zeros((model.slots, *model.token_shape), dtype=torch.long, device=model.device)
        self._active = torch.zeros(model.slots, dtype=torch.bool, device=model.device)
        self._run = model.step_all
        if mode.startswith("compile"):
            self._run = torch.compile(model.step_all, fullgraph=True, dynamic=False)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._logits: torch.Tensor | None = None
        if graph:
            self._capture(warm_steps)

    def _capture(self, warm_steps: int) -> None:
        """Warm the step up on a side stream (compilation, the libraries' workspaces), then capture
        it.  With no slot active the warm-up moves no length; what it writes, each slot's next
        token overwrites (see ``step_all``)."""
        side = torch.cuda.Stream(self.model.device)
        side.wait_stream(torch.cuda.current_stream(self.model.device))
        with torch.cuda.stream(side), torch.no_grad():
            for _ in range(warm_steps):
                self._run(self._tokens, self._active)
        torch.cuda.current_stream(self.model.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.no_grad():
            self._logits = self._run(self._tokens, self._active)

    @torch.no_grad()  # not inference_mode, under which torch.compile cannot trace the caches' views
    def step(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens[i]`` to ``slots[i]`` (each slot at most once); their logits (``(len(slots), vocab)``
        for one token per slot), float32 on the CPU.  Raises ``ValueError`` for a slot given twice or
        already at the cache's end (checked against the model's lengths: one small read-back)."""
        slots = slots.long().cpu()
        if len(set(slots.tolist())) != len(slots):
            raise ValueError("a slot was given twice in one step")
        if int(self.model.lengths[slots.to(self.model.device)].max()) >= self.model.max_len:
            raise ValueError(f"a slot reached the cache length {self.model.max_len}")
        tokens_host = torch.zeros((self.model.slots, *self.model.token_shape), dtype=torch.long)
        active_host = torch.zeros(self.model.slots, dtype=torch.bool)
        tokens_host[slots] = tokens.long().cpu()
        active_host[slots] = True
        self._tokens.copy_(tokens_host)
        self._active.copy_(active_host)
        if self._graph is not None:
            self._graph.replay()
            logits = self._logits
        else:
            logits = self._run(self._tokens, self._active)
        assert logits is not None
        return logits.float().cpu()[slots]

"""How many threads an AR unit's torch ops use on an engine worker: one.

The engine runs one worker per core and AR units side by side on them: a voice's
T2S call on one worker, other streams' vocoder chunks on the rest.  Torch's
thread count belongs to the calling thread (OpenMP's and MKL's per-thread
settings) and starts at one thread per core, so two workers each running a
two-thread op put four busy threads on two cores, and each OpenMP team's idle
threads keep spinning after every op, on the core the other worker needs.
``scripts/ab.py 308a56a --runs 10 --ar-load --ar-repeats 3 --max-lead 3``
(2026-12-04, the 2-core VM; v2-size random GPT-SoVITS voice, int8 T2S, bf16
vocoder, listeners starting together): first audio p50 412 -> 290 ms for one
listener, 542 -> 436 ms for two, 1050 -> 709 ms for four; playback stall summed
over the listeners 1870 -> 10 ms for two, 21.3 -> 7.1 s for four.  One worker
on two threads instead (a throwaway run) was no better than the default.  So
units run single-threaded and the workers give the parallelism, as the Piper
voice's regular sessions do.  The convolution library sets a shape up once per
thread count, so voices warm up at this count too (:func:`unit_threads`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

UNIT_THREADS = 1
"""Torch threads of a worker running an AR unit."""


def use_unit_threads() -> None:
    """Run the calling thread's torch ops on :data:`UNIT_THREADS` threads (a no-op once they do).

    Only the calling thread changes: the thread that loaded and warmed up the voices keeps its
    count (torch also takes this count as the start value of threads that have not run a torch
    op yet; the engine's workers call this before each unit)."""
    if torch.get_num_threads() != UNIT_THREADS:
        torch.set_num_threads(UNIT_THREADS)


@contextmanager
def unit_threads() -> Iterator[None]:
    """The calling thread's torch ops on :data:`UNIT_THREADS` threads inside the block, its own
    count again after it: a voice warms up at the count its units run at, since the convolution
    library sets up each shape once per thread count (a first stream would pay it otherwise)."""
    before = torch.get_num_threads()
    torch.set_num_threads(UNIT_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)

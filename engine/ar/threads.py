"""How many threads an AR unit's torch ops use on an engine worker: one.

The engine runs one worker per core and AR units side by side on them: a voice's
T2S call on one worker, other streams' vocoder chunks on the rest.  Torch's
thread count belongs to the calling thread (OpenMP's and MKL's per-thread
settings) and starts at one thread per core, so two workers each running a
two-thread op put four busy threads on two cores, and each OpenMP team's idle
threads keep spinning after every op, on the core the other worker needs.
Measured over a real server on the 2-core VM, with a v2-size random
GPT-SoVITS voice (int8 T2S, bf16 vocoder), one sentence of 22 s per stream
(``/tmp`` throwaway, 2026-12-04): one stream's first audio 365-405 ms and an
underrun with torch's default, 264 ms and none on one thread a unit; two
streams at once 1.9-2.3 s of stall against 0-62 ms; one worker on two threads
instead: 423 ms, and 2.3 s of stall at two streams.  So units run single-threaded
and the workers give the parallelism, as the Piper voice's regular sessions do.
"""

from __future__ import annotations

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

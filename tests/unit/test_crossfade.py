"""Overlap-add invariants: window halves sum to one, constants survive seams, every sample accounted for."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamvox.engine.audio.crossfade import SeamSmoother, crossfade, fade_in_window


@pytest.mark.parametrize("length", [1, 2, 7, 220, 441])
def test_window_halves_sum_to_one(length: int) -> None:
    w = fade_in_window(length)
    assert np.all((w > 0) & (w < 1))
    assert np.all(np.diff(w) > 0)
    np.testing.assert_array_equal(w + (1.0 - w), np.ones(length))


def test_crossfade_of_constant_is_constant() -> None:
    c = np.full(220, 0.3125, dtype=np.float32)
    np.testing.assert_array_equal(crossfade(c, c), c)


def test_crossfade_rejects_unequal_lengths() -> None:
    with pytest.raises(ValueError):
        crossfade(np.zeros(3, np.float32), np.zeros(4, np.float32))


pieces_strategy = st.lists(st.lists(st.integers(0, 400), min_size=1, max_size=5), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(pieces=pieces_strategy, overlap=st.integers(0, 300))
def test_smoother_accounts_for_every_sample_and_keeps_constants(pieces: list[list[int]], overlap: int) -> None:
    smoother = SeamSmoother(overlap)
    out = []
    total = 0
    for chunks in pieces:
        smoother.start_piece(sum(chunks))
        for n in chunks:
            total += n
            out.append(smoother.add(np.full(n, 0.5, dtype=np.float32)))
        out.append(smoother.end_piece())
    out.append(smoother.finish())
    audio = np.concatenate(out)
    assert len(audio) == total - smoother.overlapped == smoother.samples_out
    np.testing.assert_allclose(audio, 0.5, rtol=0, atol=1e-7)


def test_piece_start_offsets_follow_the_overlap() -> None:
    smoother = SeamSmoother(100)
    assert smoother.start_piece(1000) == 0
    first = smoother.add(np.ones(1000, np.float32))
    assert len(first) == 900
    smoother.end_piece()
    assert smoother.start_piece(500) == 900
    second = smoother.add(np.full(500, 2.0, np.float32))
    mixed = second[:100]
    assert mixed[0] < 1.1 and mixed[-1] > 1.9
    tail = smoother.finish()
    assert len(first) + len(second) + len(tail) == 1400
    assert smoother.overlapped == 100


def test_seam_waits_for_a_short_head_chunk() -> None:
    smoother = SeamSmoother(100)
    smoother.start_piece(200)
    smoother.add(np.ones(200, np.float32))
    smoother.end_piece()
    smoother.start_piece(300)
    assert len(smoother.add(np.ones(40, np.float32))) == 0
    released = smoother.add(np.ones(260, np.float32))
    assert len(released) == 100 + 300 - 100 - 100
    assert len(smoother.finish()) == 100

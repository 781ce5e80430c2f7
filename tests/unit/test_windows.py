"""Vocoder window schedule."""

from __future__ import annotations

import pytest
from streamvox.engine.audio.windows import WindowPlan


@pytest.mark.parametrize("total", [1, 5, 16, 17, 24, 25, 100, 611, 5000])
def test_windows_cover_every_frame_once_in_order(total: int) -> None:
    windows = list(WindowPlan().windows(total))
    assert windows[0][0] == 0 and windows[-1][1] == total
    for (a0, a1), (b0, _) in zip(windows, windows[1:], strict=False):
        assert a1 == b0 and a0 < a1


def test_first_window_small_then_growing_to_cap() -> None:
    plan = WindowPlan(first_frames=16, later_first_frames=64, max_frames=512, growth=2.0)
    sizes = [end - start for start, end in plan.windows(3000)]
    assert sizes[:7] == [16, 32, 64, 128, 256, 512, 512]
    assert max(sizes[:-1]) == 512
    assert sizes[-1] < 512 * 1.5
    later = [end - start for start, end in plan.windows(3000, first=False)]
    assert later[:4] == [64, 128, 256, 512]


def test_plan_validation() -> None:
    with pytest.raises(ValueError):
        WindowPlan(first_frames=0)
    with pytest.raises(ValueError):
        WindowPlan(first_frames=64, max_frames=32)
    with pytest.raises(ValueError):
        WindowPlan(context_frames=-1)

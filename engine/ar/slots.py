"""A fixed pool of model cache slots (one per stream generating at once).

An AR model keeps each generating stream's keys and values in one slot of a
static cache; the pool hands slots out and takes them back.  Engine thread
only: slots are acquired when a unit is prepared and released when it settles,
or when a stream is dropped while no unit of it runs.
"""

from __future__ import annotations

from collections.abc import Callable


class SlotPool:
    """Slots ``0 .. size-1``, lowest free first (adjacent slots let a batched step read one view)."""

    def __init__(self, size: int, on_release: Callable[[int], None] = lambda slot: None) -> None:
        if size < 1:
            raise ValueError(f"a slot pool needs at least one slot, got {size}")
        self.size = size
        self._free = list(range(size))
        self._on_release = on_release

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> int:
        if not self._free:
            raise RuntimeError("no free slot")
        return self._free.pop(0)

    def release(self, slot: int) -> None:
        """Give ``slot`` back once no unit uses it; ``on_release`` clears its cache first."""
        if not 0 <= slot < self.size or slot in self._free:
            raise ValueError(f"slot {slot} is not held")
        self._on_release(slot)
        self._free.append(slot)
        self._free.sort()

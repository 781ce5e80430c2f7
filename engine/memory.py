"""Handing freed heap memory back to the operating system.

glibc keeps pages that ``free`` released inside its heaps, so a process that
once held large buffers (long utterances, many streams at once) keeps their
RSS after they are gone.  ``malloc_trim(0)`` returns every free page; it is
cheap when there is nothing to return.  Other C libraries: a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS; ``False`` where the C library cannot. Thread-safe."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True

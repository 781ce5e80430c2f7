"""A session's inactivity limit: close it when the client has said nothing for a while.

Every message from the client (a ``keepalive`` too) restarts the clock.  A
session whose contexts are still speaking is not idle, whatever the client
says: its timer re-arms instead.  Dialects give their own close (code, reason,
error shape).  Event-loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class IdleTimer:
    """Calls ``on_idle`` once, ``timeout_s`` after the last :meth:`touch`, unless ``busy()``."""

    def __init__(self, timeout_s: float | None, busy: Callable[[], bool], on_idle: Callable[[], None]) -> None:
        self.timeout_s = timeout_s
        self._busy = busy
        self._on_idle = on_idle
        self._last = time.monotonic()
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False

    def start(self) -> None:
        self._last = time.monotonic()
        self._arm(self.timeout_s)

    def touch(self) -> None:
        """The client said something."""
        self._last = time.monotonic()

    def set_timeout(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self.touch()
        self._arm(timeout_s)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, delay: float | None) -> None:
        self.stop()
        if delay is not None and not self._fired:
            self._handle = asyncio.get_running_loop().call_later(max(0.0, delay), self._check)

    def _check(self) -> None:
        self._handle = None
        assert self.timeout_s is not None
        quiet = time.monotonic() - self._last
        if quiet < self.timeout_s:
            self._arm(self.timeout_s - quiet)
        elif self._busy():
            self._arm(self.timeout_s)  # still speaking: the client is listening, not idle
        else:
            self._fired = True
            self._on_idle()

"""Per-key limits: sessions at once, characters per minute, audio seconds per day.

The counters live behind :class:`QuotaStore`, so several replicas can later
share one (Redis, with the scale-out work); :class:`MemoryQuotaStore` is the
default and counts for this process only.  A :class:`Usage` is one session's
view: it holds the session's place and charges its text and audio to the key
(and, for a browser token, to the token's own session limit).

Limits are checked when text arrives: text accepted before a limit was reached
is still spoken, so audio per day can run over by what was already accepted.
Event-loop only.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Literal, Protocol

from streamvox.stream_server.keys import KeyLimits

WINDOW_S = 60.0
DAY_S = 86_400

LimitName = Literal["sessions", "chars_per_minute", "audio_s_per_day"]


class QuotaExceeded(Exception):
    """A key (or token) is over one of its limits; ``limit`` says which."""

    def __init__(self, limit: LimitName, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


class QuotaStore(Protocol):
    """Counters per subject (a key's name, or ``token:<id>``)."""

    def open_session(self, subject: str, limit: int | None) -> bool:
        """Count one more open session, unless that would pass ``limit``."""
        ...

    def close_session(self, subject: str) -> None: ...

    def take_chars(self, subject: str, count: int, limit: int | None, now: float) -> bool:
        """Charge ``count`` characters, unless the last 60 s plus these would pass ``limit``."""
        ...

    def add_audio(self, subject: str, seconds: float, now: float) -> None:
        """Charge ``seconds`` of audio sent (``now``: Unix time)."""
        ...

    def audio_today(self, subject: str, now: float) -> float:
        """Audio seconds charged in the UTC day of ``now``."""
        ...


class MemoryQuotaStore:
    """:class:`QuotaStore` in this process's memory."""

    def __init__(self) -> None:
        self._sessions: dict[str, int] = defaultdict(int)
        self._chars: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._char_totals: dict[str, int] = defaultdict(int)
        self._audio: dict[str, tuple[int, float]] = {}

    def open_session(self, subject: str, limit: int | None) -> bool:
        if limit is not None and self._sessions[subject] >= limit:
            return False
        self._sessions[subject] += 1
        return True

    def close_session(self, subject: str) -> None:
        self._sessions[subject] -= 1
        if self._sessions[subject] <= 0:
            del self._sessions[subject]

    def sessions(self, subject: str) -> int:
        return self._sessions.get(subject, 0)

    def take_chars(self, subject: str, count: int, limit: int | None, now: float) -> bool:
        log = self._chars[subject]
        while log and log[0][0] <= now - WINDOW_S:
            self._char_totals[subject] -= log.popleft()[1]
        if limit is not None and self._char_totals[subject] + count > limit:
            return False
        log.append((now, count))
        self._char_totals[subject] += count
        return True

    def add_audio(self, subject: str, seconds: float, now: float) -> None:
        day = int(now // DAY_S)
        current_day, used = self._audio.get(subject, (day, 0.0))
        self._audio[subject] = (day, (used if current_day == day else 0.0) + seconds)

    def audio_today(self, subject: str, now: float) -> float:
        day, used = self._audio.get(subject, (-1, 0.0))
        return used if day == int(now // DAY_S) else 0.0


class Usage:
    """One session's charges against its key's limits (and its token's session limit)."""

    def __init__(
        self,
        store: QuotaStore,
        key_name: str,
        limits: KeyLimits,
        token_id: str | None = None,
        token_sessions: int | None = None,
    ) -> None:
        self.store = store
        self.key_name = key_name
        self.limits = limits
        self._token_subject = None if token_id is None else f"token:{token_id}"
        self._token_sessions = token_sessions
        self._open: list[str] = []

    def open(self) -> None:
        """Take a session place for the key (and the token); raises :class:`QuotaExceeded`."""
        if not self.store.open_session(self.key_name, self.limits.sessions):
            raise QuotaExceeded("sessions", f"this key already has {self.limits.sessions} session(s) open")
        self._open.append(self.key_name)
        if self._token_subject is not None:
            if not self.store.open_session(self._token_subject, self._token_sessions):
                self.close()
                raise QuotaExceeded("sessions", f"this token already has {self._token_sessions} session(s) open")
            self._open.append(self._token_subject)

    def close(self) -> None:
        for subject in self._open:
            self.store.close_session(subject)
        self._open.clear()

    def take_text(self, count: int, now: float | None = None) -> None:
        """Charge ``count`` characters about to be spoken; raises :class:`QuotaExceeded`."""
        now = time.time() if now is None else now
        daily = self.limits.audio_s_per_day
        if daily is not None and self.store.audio_today(self.key_name, now) >= daily:
            raise QuotaExceeded("audio_s_per_day", f"this key has used its {daily:g} s of audio for today (UTC)")
        if not self.store.take_chars(self.key_name, count, self.limits.chars_per_minute, now):
            raise QuotaExceeded(
                "chars_per_minute", f"this key may send {self.limits.chars_per_minute} characters per minute"
            )

    def add_audio(self, seconds: float, now: float | None = None) -> None:
        self.store.add_audio(self.key_name, seconds, time.time() if now is None else now)

"""A record of the units the engine ran, one JSON line each: what scheduling did, moment by moment.

``/metrics`` says how many units came late over a run; the trace says when, for which stream,
beside what, and what each unit cost.  ``streamvox bench load --unit-trace`` reads it to split a
step into its arrival burst and the rest (``bench/trace_summary.py``).  Off unless a path is given
(``streamvox serve --unit-trace FILE``): it costs a line written per unit.  A unit that failed,
or whose stream was aborted while it ran, leaves no line.

Times are ``time.monotonic()`` seconds, the clock every process of the machine shares on Linux, so
a benchmark in another process can place the records against its own steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO


@dataclass(frozen=True)
class UnitRecord:
    """One finished unit."""

    stream: str
    """The stream it was dispatched for (a batched unit advanced others too: ``batch``)."""
    action: str
    """The backend's name for the step (a Piper ``window``; an AR ``prefill``, ``step``, ...)."""
    batch: int
    """Streams the unit advanced."""
    started: float
    """When it was dispatched to a worker."""
    finished: float
    """When the engine thread took its result (what the listener's deadline is compared with)."""
    run_s: float
    """Wall time on its worker."""
    cpu_s: float
    """CPU time of its worker thread (not of a runtime's own thread pool): below ``run_s`` when
    the thread waited for a core or the GIL."""
    deadline: float | None
    """When the stream's listener would have run dry without it (``None``: no audio out yet)."""
    audio_s: float
    """Seconds of audio it produced for the stream."""
    first_audio: bool
    """It produced the stream's first audio."""

    @property
    def late_s(self) -> float:
        """How long after the listener ran dry it finished (0 when on time or not yet playing)."""
        if self.deadline is None or self.audio_s == 0:
            return 0.0
        return max(0.0, self.finished - self.deadline)


class UnitTraceWriter:
    """Appends :class:`UnitRecord` lines to a file, each flushed as written (a reader in another
    process sees every finished unit).  Engine thread only: not thread-safe."""

    def __init__(self, path: str | Path) -> None:
        """Opens ``path`` for appending (``OSError`` if it cannot be)."""
        self.path = Path(path)
        self._file: TextIO = self.path.open("a", encoding="utf-8", buffering=1)

    def write(self, record: UnitRecord) -> bool:
        """Append ``record``; ``False`` if the file cannot take it (a full disk): the writer is then
        closed, and a diagnostic never stops the engine that writes it."""
        try:
            self._file.write(json.dumps(asdict(record), separators=(",", ":")) + "\n")
        except OSError:
            self.close()
            return False
        return True

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass  # its last line could not be flushed: nothing more to lose


def read_unit_trace(path: str | Path, since: float | None = None, until: float | None = None) -> list[UnitRecord]:
    """The records in ``path`` of units dispatched in ``[since, until)`` (either bound optional),
    in file order.  A last line cut short by a writer still at work is skipped."""
    return list(_records(Path(path), since, until))


def _records(path: Path, since: float | None, until: float | None) -> Iterator[UnitRecord]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.endswith("\n"):
                return
            record = UnitRecord(**json.loads(line))
            if (since is None or record.started >= since) and (until is None or record.started < until):
                yield record

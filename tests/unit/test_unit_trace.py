"""The engine's unit trace: one line per unit, read back in time order and by time range."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from streamvox.engine.backends.piper.voice import PiperVoice
from streamvox.engine.core import EngineConfig, EngineCore
from streamvox.engine.events import AudioChunk, StreamDone
from streamvox.engine.unit_trace import UnitRecord, UnitTraceWriter, read_unit_trace

from tests.unit.test_engine_core import NOISE_OFF, SEGMENTS, _finish_all, _open_reported, run_stream


def _record(started: float, **kw: object) -> UnitRecord:
    fields = {"stream": "s", "action": "window", "batch": 1, "finished": started + 0.1, "run_s": 0.1,
              "cpu_s": 0.09, "deadline": None, "audio_s": 0.5, "first_audio": False, **kw}  # fmt: skip
    return UnitRecord(started=started, **fields)  # type: ignore[arg-type]


def test_records_are_read_back_as_written_and_filtered_by_dispatch_time(tmp_path: Path) -> None:
    path = tmp_path / "units.jsonl"
    writer = UnitTraceWriter(path)
    written = [_record(1.0, first_audio=True), _record(2.0, deadline=1.5, batch=3), _record(3.0)]
    for record in written:
        writer.write(record)
    # Each line is flushed as written: another process reads it while the server runs.
    assert read_unit_trace(path) == written
    writer.close()
    assert read_unit_trace(path, since=2.0) == written[1:]
    assert read_unit_trace(path, since=1.5, until=3.0) == [written[1]]
    with path.open("a", encoding="utf-8") as f:
        f.write('{"stream": "cut sh')  # a writer caught mid-line
    assert read_unit_trace(path) == written


def test_a_unit_is_late_by_how_long_after_its_deadline_it_brought_audio() -> None:
    assert _record(1.0, deadline=1.05).late_s == pytest.approx(0.05)  # finished at 1.1
    assert _record(1.0, deadline=2.0).late_s == 0.0
    assert _record(1.0, deadline=None).late_s == 0.0  # no audio out yet: nobody was waiting
    assert _record(1.0, deadline=1.0, audio_s=0.0).late_s == 0.0  # brought no audio


def test_a_traced_engine_writes_a_line_per_unit_that_adds_up_to_the_stream(
    make_engine: Callable[..., EngineCore], voice: PiperVoice, tmp_path: Path
) -> None:
    path = tmp_path / "units.jsonl"
    core = make_engine(EngineConfig(workers=1, unit_trace=str(path)))
    events = run_stream(core, voice, SEGMENTS, NOISE_OFF)
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])
    done = events[-1]
    assert isinstance(done, StreamDone)
    records = read_unit_trace(path)
    assert len(records) >= len(SEGMENTS) + 1  # a window per segment at least, then the unit that ends it
    assert {(r.stream, r.action, r.batch) for r in records} == {("s", "window", 1)}
    assert sum(r.audio_s for r in records) == pytest.approx(len(audio) / voice.sample_rate)
    assert [r.first_audio for r in records] == [True] + [False] * (len(records) - 1)
    assert records[0].deadline is None and all(r.deadline is not None for r in records[1:])
    starts = [r.started for r in records]
    assert starts == sorted(starts) and all(r.started < r.finished for r in records)
    assert all(0 < r.cpu_s <= r.run_s + 0.01 for r in records if r.audio_s)  # thread CPU within its wall
    assert sum(r.run_s for r in records) == pytest.approx(done.compute_s)


def test_the_trace_shows_the_late_units_the_engine_counts(
    make_engine: Callable[..., EngineCore], voice: PiperVoice, tmp_path: Path
) -> None:
    path = tmp_path / "units.jsonl"
    core = make_engine(EngineConfig(workers=1, unit_trace=str(path)))
    _finish_all(core, {"behind": _open_reported(core, "behind", voice, position_s=100.0)})
    late = [r for r in read_unit_trace(path) if r.late_s > 0]
    assert len(late) == core.late_units >= 3
    assert sum(r.late_s for r in late) == pytest.approx(core.late_seconds)


def test_a_file_that_cannot_take_a_line_stops_the_trace_not_the_engine(
    make_engine: Callable[..., EngineCore], voice: PiperVoice
) -> None:
    full = Path("/dev/full")  # every write fails with ENOSPC
    writer = UnitTraceWriter(full)
    assert writer.write(_record(1.0)) is False
    core = make_engine(EngineConfig(workers=1, unit_trace=str(full)))
    for _ in range(2):  # the stream after the failed write is served as well
        events = run_stream(core, voice, SEGMENTS[:2], NOISE_OFF)
        assert isinstance(events[-1], StreamDone)
    assert core.running and core.problem is None

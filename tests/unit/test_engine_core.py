"""The engine thread: exact output, sample accounting, aborts, failure isolation, scheduling order."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable

import numpy as np
import pytest
from streamvox.engine.api import SynthesisParams
from streamvox.engine.backends.piper.voice import HOP_LENGTH, PiperVoice
from streamvox.engine.core import EngineConfig, EngineCore
from streamvox.engine.events import (
    AudioChunk,
    SegmentFinished,
    SegmentStarted,
    StreamAborted,
    StreamDone,
    StreamFailed,
)
from streamvox.engine.registry import VoiceRegistry
from streamvox.engine.scheduler import DeadlineScheduler, EngineStream
from streamvox.engine.text.normalize import normalize_for_speech

SEGMENTS = ["Hello there,", "this is the engine thread speaking.", "It streams windows as they finish."]
NOISE_OFF = SynthesisParams(noise=False)


def run_stream(engine: EngineCore, voice: PiperVoice, segments: list[str], params: SynthesisParams) -> list[object]:
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine.open("s", voice.id, params, events.put)
    for i, text in enumerate(segments):
        engine.add_segment("s", i, text)
    engine.finish("s")
    out = []
    while True:
        event = events.get(timeout=60)
        out.append(event)
        if isinstance(event, StreamDone | StreamFailed | StreamAborted):
            return out


def test_single_segment_equals_one_shot_synthesis(engine: EngineCore, voice: PiperVoice) -> None:
    events = run_stream(engine, voice, [SEGMENTS[1]], NOISE_OFF)
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])
    expected = voice.synthesize(voice.text_to_ids(normalize_for_speech(SEGMENTS[1])), None)
    assert len(audio) == len(expected)
    error = np.sum((audio.astype(np.float64) - expected) ** 2)
    assert 10 * np.log10(np.sum(expected.astype(np.float64) ** 2) / error) >= 60


def test_sample_accounting_across_segments(engine: EngineCore, voice: PiperVoice) -> None:
    events = run_stream(engine, voice, SEGMENTS, NOISE_OFF)
    lengths = [voice.front(voice.text_to_ids(t), None).frames * HOP_LENGTH for t in SEGMENTS]
    overlap = round(voice.sample_rate * engine.config.seam_ms / 1000)
    audio = np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.samples == len(audio) == sum(lengths) - overlap * (len(SEGMENTS) - 1)
    assert [e.index for e in events if isinstance(e, SegmentFinished)] == list(range(len(SEGMENTS)))
    starts = [e.start_sample for e in events if isinstance(e, SegmentStarted)]
    assert starts == [sum(lengths[:k]) - k * overlap for k in range(len(SEGMENTS))]
    assert done.compute_s > 0


def test_same_seed_same_audio_and_other_seed_differs(engine: EngineCore, voice: PiperVoice) -> None:
    def audio(seed: int) -> np.ndarray:
        events = run_stream(engine, voice, SEGMENTS[:2], SynthesisParams(seed=seed))
        return np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])

    first, again, other = audio(11), audio(11), audio(12)
    np.testing.assert_array_equal(first, again)
    assert len(first) != len(other) or not np.array_equal(first, other)


def test_abort_is_acknowledged_and_nothing_follows(engine: EngineCore, voice: PiperVoice) -> None:
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine.open("long", voice.id, NOISE_OFF, events.put)
    for i in range(20):
        engine.add_segment("long", i, "This sentence is here to keep the engine busy for a while longer.")
    engine.finish("long")
    while not isinstance(events.get(timeout=30), AudioChunk):
        pass
    engine.abort("long")
    seen = []
    while not isinstance(event := events.get(timeout=30), StreamAborted):
        seen.append(event)
    assert len([e for e in seen if isinstance(e, AudioChunk)]) <= 2  # at most the unit in flight
    time.sleep(0.3)
    assert events.empty()
    assert engine.active_streams == 0


class _BrokenVoice:
    """Stands in for a Piper voice whose model fails at run time."""

    kind = "piper"
    id = "broken"

    def __init__(self, real: PiperVoice) -> None:
        self.sample_rate = real.sample_rate

    def phonemes(self, text: str) -> list[str]:
        raise RuntimeError("model exploded")


def test_one_stream_failing_does_not_stop_the_others(make_engine: Callable[..., EngineCore], voice: PiperVoice) -> None:
    voices = VoiceRegistry()
    voices.add(voice)
    voices.add(_BrokenVoice(voice))  # type: ignore[arg-type]
    engine = make_engine(voices=voices)
    broken: queue.SimpleQueue[object] = queue.SimpleQueue()
    engine.open("bad", "broken", NOISE_OFF, broken.put)
    engine.add_segment("bad", 0, "anything")
    failed = broken.get(timeout=30)
    assert isinstance(failed, StreamFailed) and failed.code == "synthesis_failed"
    assert "exploded" not in failed.message and "bad" in failed.message  # details stay in the log
    events = run_stream(engine, voice, SEGMENTS[:1], NOISE_OFF)
    assert isinstance(events[-1], StreamDone)


def test_empty_segments_produce_a_done_with_no_audio(engine: EngineCore, voice: PiperVoice) -> None:
    events = run_stream(engine, voice, ["   "], NOISE_OFF)
    assert [type(e) for e in events] == [SegmentFinished, StreamDone]
    assert events[1].samples == 0


def _fake(arrival: int, first_audio_at: float | None, samples_out: int, rate: int = 1000) -> EngineStream:
    class _V:
        sample_rate = rate

    stream = EngineStream("s", _V(), None, None, print, arrival)  # type: ignore[arg-type]
    stream.first_audio_at = first_audio_at
    stream.playback_start = first_audio_at
    stream.samples_out = samples_out
    return stream


def test_scheduler_serves_first_audio_then_earliest_deadline() -> None:
    scheduler = DeadlineScheduler()
    playing_long = _fake(0, first_audio_at=100.0, samples_out=5000)  # dry at 105
    playing_short = _fake(1, first_audio_at=100.0, samples_out=1000)  # dry at 101
    new_late = _fake(3, None, 0)
    new_early = _fake(2, None, 0)
    everyone = [playing_long, playing_short, new_late, new_early]
    assert scheduler.pick(everyone) == [new_early]
    assert scheduler.pick(everyone, 4) == [new_early, new_late, playing_short, playing_long]
    assert scheduler.pick(everyone, 2) == [new_early, new_late]
    assert scheduler.pick([playing_long, playing_short], 3) == [playing_short, playing_long]
    assert scheduler.pick([]) == []
    assert scheduler.pick(everyone, 0) == []


def test_a_new_streams_first_audio_is_due_a_budget_after_its_first_segment() -> None:
    scheduler = DeadlineScheduler(first_audio_s=0.1)
    playing_short = _fake(0, first_audio_at=100.0, samples_out=1050)  # dry at 101.05
    playing_long = _fake(1, first_audio_at=100.0, samples_out=1500)  # dry at 101.5
    new = _fake(2, None, 0)
    new.ready_at = 101.0  # first audio due at 101.1
    waiting = _fake(3, None, 0)  # no segment queued yet: no time to go by, so first
    assert scheduler.pick([playing_long, new, playing_short], 3) == [playing_short, new, playing_long]
    assert scheduler.pick([playing_long, new, waiting], 3) == [waiting, new, playing_long]
    assert DeadlineScheduler(first_audio_s=0.0).pick([playing_short, new]) == [new]
    with pytest.raises(ValueError, match="first_audio_s"):
        EngineConfig(first_audio_s=-1.0)


def test_the_engine_marks_when_a_streams_first_segment_is_queued(registry: VoiceRegistry, voice: PiperVoice) -> None:
    core = EngineCore(registry, EngineConfig(first_audio_s=5.0))
    seen: list[float | None] = []

    def record(streams: list[EngineStream], count: int = 1) -> list[EngineStream]:
        seen.extend(s.ready_at for s in streams)
        return []  # dispatch nothing: only the marks are looked at

    core.scheduler.pick = record  # type: ignore[method-assign]
    core.start()
    try:
        core.open("a", voice.id, NOISE_OFF, lambda event: None)
        time.sleep(0.2)
        before = time.monotonic()
        core.add_segment("a", 0, "Hello there.")
        core.add_segment("a", 1, "And again.")
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        core.stop()
    assert seen and all(mark is not None and before <= mark <= before + 5 for mark in seen)
    assert len(set(seen)) == 1  # the first segment's time, not moved by the second


def test_engine_config_and_stop_are_idempotent(registry: VoiceRegistry) -> None:
    core = EngineCore(registry, EngineConfig(seam_ms=5.0))
    core.start()
    core.start()
    assert core.running
    core.stop()
    core.stop()
    assert not core.running


@pytest.mark.parametrize("segments", [[], ["One."]])
def test_stop_aborts_open_streams(
    make_engine: Callable[..., EngineCore], voice: PiperVoice, segments: list[str]
) -> None:
    core = make_engine()
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    core.open("x", voice.id, NOISE_OFF, events.put)
    for i, text in enumerate(segments):
        core.add_segment("x", i, text)
    time.sleep(0.2)
    core.stop()
    kinds = []
    while not events.empty():
        kinds.append(type(events.get()))
    assert kinds[-1] is StreamAborted


def test_lead_limit_paces_a_stream_to_its_listener(make_engine: Callable[..., EngineCore], voice: PiperVoice) -> None:
    core = make_engine(EngineConfig(max_lead_s=0.5))
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    started = time.monotonic()
    core.open("paced", voice.id, NOISE_OFF, events.put)
    core.add_segment("paced", 0, "This sentence is long enough to take a few seconds of audio to speak aloud.")
    core.finish("paced")
    audio_s = 0.0
    last_chunk_s = 0.0
    while not isinstance(event := events.get(timeout=60), StreamDone):
        if isinstance(event, AudioChunk):
            # A unit starts only while the stream is at most the lead ahead of real time
            # (0.3 s of slack for queueing on a busy machine).
            assert audio_s - (time.monotonic() - started) < 0.5 + 0.3
            last_chunk_s = len(event.pcm) / voice.sample_rate
            audio_s += last_chunk_s
    elapsed = time.monotonic() - started
    assert audio_s > 3.0 and elapsed > audio_s - last_chunk_s - 0.5 - 0.3


def test_playback_reports_move_the_deadline(make_engine: Callable[..., EngineCore], voice: PiperVoice) -> None:
    core = make_engine(EngineConfig(max_lead_s=0.3))
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    core.open("r", voice.id, NOISE_OFF, events.put)
    core.add_segment("r", 0, "A listener that reports it has played far ahead lets the engine run freely.")
    core.finish("r")
    while not isinstance(events.get(timeout=30), AudioChunk):
        pass
    started = time.monotonic()
    core.report_playback("r", position_s=100.0)  # as if playback began 100 s ago
    while not isinstance(events.get(timeout=30), StreamDone):
        pass
    assert time.monotonic() - started < 2.0  # not paced to real time any more


def _audio(events: list[object]) -> np.ndarray:
    return np.concatenate([e.pcm for e in events if isinstance(e, AudioChunk)])


def test_streams_run_side_by_side_and_each_matches_its_solo_audio(
    make_engine: Callable[..., EngineCore], voice: PiperVoice
) -> None:
    seeded = SynthesisParams(seed=11)
    core = make_engine(EngineConfig(workers=2))
    solo = _audio(run_stream(core, voice, SEGMENTS, seeded))
    queues: dict[str, queue.SimpleQueue[object]] = {}
    for name in ("a", "b", "c"):
        queues[name] = queue.SimpleQueue()
        core.open(name, voice.id, seeded, queues[name].put)
        for i, text in enumerate(SEGMENTS):
            core.add_segment(name, i, text)
        core.finish(name)
    together = {}
    for name, events in queues.items():
        got = []
        while not isinstance(event := events.get(timeout=60), StreamDone):
            got.append(event)
        together[name] = _audio(got)
    for audio in together.values():
        assert np.array_equal(audio, solo)
    assert core.units_by_concurrency.get(2, 0) > 0  # two units really ran at once


def test_a_held_stream_waits_until_released(make_engine: Callable[..., EngineCore], voice: PiperVoice) -> None:
    core = make_engine(EngineConfig(workers=2))
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    core.open("h", voice.id, NOISE_OFF, events.put)
    core.add_segment("h", 0, "Holding a stream stops its generation until its owner can send again. " * 3)
    core.finish("h")
    while not isinstance(events.get(timeout=30), AudioChunk):
        pass
    core.hold("h", True)
    time.sleep(1.0)  # the unit in flight (if any) lands
    while not events.empty():
        assert not isinstance(events.get(), StreamDone)
    time.sleep(1.0)
    assert events.empty()  # nothing ran while held
    core.hold("h", False)
    while not isinstance(events.get(timeout=60), StreamDone):
        pass


def test_engine_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        EngineConfig(workers=-1)
    with pytest.raises(ValueError):
        EngineConfig(max_lead_s=0)
    with pytest.raises(ValueError, match="lead_work_s"):
        EngineConfig(lead_work_s=0)
    assert EngineConfig(workers=3).worker_count == 3


LONG = "A listener who is behind hears every window late, and the engine counts each one. " * 3


def _open_reported(core: EngineCore, name: str, voice: PiperVoice, position_s: float) -> queue.SimpleQueue[object]:
    """A long stream whose listener reports, after the first audio, having played ``position_s``."""
    events: queue.SimpleQueue[object] = queue.SimpleQueue()
    core.open(name, voice.id, NOISE_OFF, events.put)
    core.add_segment(name, 0, LONG)
    core.add_segment(name, 1, LONG)
    while not isinstance(events.get(timeout=30), AudioChunk):
        pass
    core.report_playback(name, position_s=position_s)
    return events


def _finish_all(core: EngineCore, streams: dict[str, queue.SimpleQueue[object]]) -> None:
    for name in streams:
        core.finish(name)
    for events in streams.values():
        while not isinstance(events.get(timeout=120), StreamDone):
            pass


def test_units_finished_after_the_listener_ran_dry_are_counted_late(
    make_engine: Callable[..., EngineCore], voice: PiperVoice
) -> None:
    core = make_engine(EngineConfig(workers=1))
    _finish_all(core, {"on-time": _open_reported(core, "on-time", voice, position_s=0.0)})
    assert core.late_units == 0 and core.late_seconds == 0  # far faster than real time: never late
    _finish_all(core, {"behind": _open_reported(core, "behind", voice, position_s=100.0)})
    assert core.late_units >= 3  # every unit after the report: playback "began" 100 s ago
    assert core.late_seconds >= 50 * core.late_units  # 100 s less the ~30 s of audio already out
    assert core.late_behind_lead_work == 0  # one worker: nothing ran beside them


def test_late_units_that_started_beside_work_done_ahead_are_told_apart(
    make_engine: Callable[..., EngineCore], voice: PiperVoice
) -> None:
    core = make_engine(EngineConfig(workers=2, lead_work_s=1.0))
    streams = {
        "ahead": _open_reported(core, "ahead", voice, position_s=-100.0),  # its listener starts in 100 s
        "behind": _open_reported(core, "behind", voice, position_s=100.0),
    }
    _finish_all(core, streams)
    assert core.late_units >= 3  # only the stream behind: the one ahead has 100 s of slack
    assert 1 <= core.late_behind_lead_work <= core.late_units

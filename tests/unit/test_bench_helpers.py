"""Pure helpers the benchmarks compute their figures with: playback stalls, a T2S step's floor, a load
step's phases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from streamvox.bench.ar import kv_bytes_per_value, median_run, t2s_step_bytes, t2s_step_macs
from streamvox.bench.harness import playback_stall_ms, process_cpu_s, snr_db, thread_cpu_s
from streamvox.bench.trace_summary import (
    SETTLE_S,
    action_summary,
    describe_actions,
    describe_phases,
    load_phases,
    phase_summary,
)
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig
from streamvox.engine.unit_trace import UnitRecord


def test_a_listener_stalls_only_when_a_packet_comes_after_the_audio_before_it_ran_out() -> None:
    rate = 1000
    # 0.5 s of audio at t=0, the next at 0.4 s (in time), then one at 1.2 s (0.3 s late).
    arrivals = [(0.0, 500), (0.4, 400), (1.2, 100)]
    assert playback_stall_ms(arrivals, rate) == pytest.approx(300.0)
    assert playback_stall_ms([(5.0, 10)], rate) == 0.0
    assert playback_stall_ms([], rate) == 0.0
    # A stall restarts the clock at the late packet: the one after it is judged from there.
    assert playback_stall_ms([(0.0, 100), (0.5, 100), (0.65, 100)], rate) == pytest.approx(450.0)
    # A 100 ms buffer before playing absorbs 100 ms of the first late packet's wait.
    assert playback_stall_ms(arrivals, rate, prebuffer_s=0.1) == pytest.approx(200.0)


def test_a_t2s_step_reads_its_weights_once_and_every_slot_s_cache() -> None:
    cfg = T2SConfig()
    linears = 24 * (3 * 512 * 512 + 512 * 512 + 2 * 512 * 2048)
    fp32, int8 = t2s_step_bytes(cfg, False, 1, 0), t2s_step_bytes(cfg, True, 1, 0)
    assert fp32 - int8 == 3 * linears  # 4 bytes a weight against 1
    assert int8 > linears  # the fp32 head and biases are read too
    cache_per_slot_position = 2 * 24 * 512 * 4  # keys and values, every layer, fp32
    assert t2s_step_bytes(cfg, True, 16, 200) - int8 == 16 * 200 * cache_per_slot_position
    assert t2s_step_macs(cfg, 16, 200) == 16 * t2s_step_macs(cfg, 1, 200)
    # a bf16 cache reads half of fp32's; an int8 one a quarter, plus a float32 scale per 32-value row
    assert kv_bytes_per_value(cfg, None) == 4 and kv_bytes_per_value(cfg, torch.bfloat16) == 2
    assert kv_bytes_per_value(cfg, torch.int8) == 1 + 4 / 32
    assert t2s_step_macs(cfg, 1, 0) == linears + 1025 * 512


def test_snr_is_the_reference_energy_over_the_error_energy() -> None:
    reference = np.array([3.0, 4.0])  # energy 25
    assert snr_db(reference, reference + np.array([0.5, 0.0])) == pytest.approx(10 * np.log10(25 / 0.25))
    assert snr_db(reference, reference) == float("inf")


def _unit(started: float, run_s: float, audio_s: float, deadline: float | None = None, **kw: object) -> UnitRecord:
    fields = {"stream": "s", "action": "window", "batch": 1, "cpu_s": run_s / 2, "first_audio": False, **kw}
    return UnitRecord(started=started, finished=started + run_s, run_s=run_s, deadline=deadline, audio_s=audio_s,
                      **fields)  # type: ignore[arg-type]  # fmt: skip


def test_a_phase_counts_the_units_dispatched_in_it_and_their_running_time_inside_it() -> None:
    units = [
        _unit(0.0, 0.5, 1.0, first_audio=True),
        _unit(0.5, 0.5, 2.0, deadline=0.9),  # finished at 1.0, after its listener ran dry at 0.9
        _unit(1.8, 0.4, 1.0, deadline=5.0),  # runs 0.2 s past the phase's end: only 0.2 counted busy
        _unit(2.5, 0.1, 1.0),  # dispatched after the phase
    ]
    p = phase_summary(units, 0.0, 2.0, workers=2)
    assert p["units"] == 3 and p["seconds"] == 2.0
    assert p["workers_busy"] == pytest.approx((0.5 + 0.5 + 0.2) / (2 * 2.0))
    assert p["audio_s_per_s"] == pytest.approx(4.0 / 2.0)
    assert p["cpu_ms_per_audio_s"] == pytest.approx(1000 * (0.25 + 0.25 + 0.2) / 4.0)
    assert p["run_ms_per_audio_s"] == pytest.approx(1000 * 1.4 / 4.0)
    assert (p["late_units"], p["first_audio_units"]) == (1, 1)
    assert p["server_cpu_percent"] is None and p["server_full_share"] is None  # no CPU samples given
    empty = phase_summary(units, 3.0, 4.0, workers=2)
    assert empty["units"] == 0 and empty["cpu_ms_per_audio_s"] is None and empty["workers_busy"] == 0


def test_a_load_step_splits_at_the_ramp_plus_the_settling_time() -> None:
    start = 100.0  # unit times are the machine's monotonic clock, the CPU samples seconds into the step
    units = [_unit(start + t, 0.1, 0.5) for t in (0.0, 1.0, 2.9, 3.1, 9.0)]
    cpu = [[1.0, 120.0], [2.0, 190.0], [3.0, 195.0], [4.0, 100.0], [5.0, 50.0]]
    phases = load_phases(units, start, start + 10.0, ramp_s=2.0, workers=1, cpu_timeline=cpu, cores=2)
    arrivals, after = phases["arrivals"], phases["after"]
    assert SETTLE_S == 1.0 and arrivals["seconds"] == 3.0 and after["seconds"] == 7.0
    assert (arrivals["units"], after["units"]) == (3, 2)
    assert arrivals["server_cpu_percent"] == pytest.approx((120 + 190 + 195) / 3)
    assert arrivals["server_full_share"] == pytest.approx(2 / 3)  # at or above 90 % of two cores: 180 %
    assert (after["server_cpu_percent"], after["server_full_share"]) == (75.0, 0.0)
    short = load_phases(units, start, start + 2.5, ramp_s=2.0, workers=1)
    assert list(short) == ["arrivals"]  # the step ended inside the burst
    line = describe_phases(36, phases)
    assert line.startswith("  N=36: arrivals (3.0 s): workers busy 10 %, server CPU 168 % (full 67 % of it)")
    assert "after (7.0 s): workers busy 3 %, server CPU 75 % (full 0 % of it)" in line


def test_a_run_s_units_are_summed_by_action() -> None:
    units = [
        _unit(0.0, 0.04, 0.0, action="start"),
        _unit(0.1, 0.01, 0.0, action="step", batch=4),
        _unit(0.2, 0.01, 0.0, action="step", batch=2),
        _unit(0.3, 0.05, 0.48, action="chunk", deadline=0.3),  # finished at 0.35, after the listener ran dry
    ]
    summary = action_summary(units)
    assert list(summary) == ["start", "step", "chunk"]
    assert summary["step"]["units"] == 2 and summary["step"]["batch_mean"] == 3.0
    assert summary["step"]["run_ms"] == pytest.approx(20.0) and summary["step"]["cpu_ms"] == pytest.approx(10.0)
    assert (summary["chunk"]["audio_s"], summary["chunk"]["late_units"], summary["start"]["late_units"]) == (0.48, 1, 0)
    assert (
        describe_actions(summary)
        == "start 1x (batch 1.0) 40 ms; step 2x (batch 3.0) 20 ms; chunk 1x (batch 1.0) 50 ms, 1 late"
    )


def test_median_run_keeps_the_middle_run_whole_and_lists_every_run() -> None:
    runs = [{"tokens_per_s": v, "step_ms": 1000 / v} for v in (300.0, 100.0, 200.0)]
    chosen = median_run(runs)
    assert chosen["tokens_per_s"] == 200.0 and chosen["step_ms"] == 5.0
    assert chosen["tokens_per_s_runs"] == [300.0, 100.0, 200.0]
    assert "tokens_per_s_runs" not in runs[2]  # the runs themselves are left as they were
    assert median_run(runs[:2])["tokens_per_s"] == 100.0  # an even count: the lower middle


def test_a_calls_cpu_time_counts_work_not_waiting() -> None:
    import time

    def spin(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    assert thread_cpu_s(lambda: time.sleep(0.2)) < 0.05
    assert thread_cpu_s(lambda: spin(0.1)) >= 0.1


def test_a_process_cpu_time_counts_its_threads_work() -> None:
    import threading
    import time

    import psutil

    def spin(seconds: float) -> None:
        until = time.thread_time() + seconds
        while time.thread_time() < until:
            pass

    me = psutil.Process()
    before = process_cpu_s(me)
    worker = threading.Thread(target=spin, args=(0.2,))
    worker.start()
    worker.join()  # an ended thread's time stays with the process
    spin(0.1)
    assert process_cpu_s(me) - before >= 0.28  # /proc counts whole clock ticks

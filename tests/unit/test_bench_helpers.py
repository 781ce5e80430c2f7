"""Pure helpers the benchmarks compute their figures with: playback stalls and a T2S step's floor."""

from __future__ import annotations

import numpy as np
import pytest
from streamvox.bench.ar import t2s_step_bytes, t2s_step_macs
from streamvox.bench.harness import playback_stall_ms, snr_db
from streamvox.engine.backends.gpt_sovits.t2s import T2SConfig


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
    assert t2s_step_macs(cfg, 1, 0) == linears + 1025 * 512


def test_snr_is_the_reference_energy_over_the_error_energy() -> None:
    reference = np.array([3.0, 4.0])  # energy 25
    assert snr_db(reference, reference + np.array([0.5, 0.0])) == pytest.approx(10 * np.log10(25 / 0.25))
    assert snr_db(reference, reference) == float("inf")

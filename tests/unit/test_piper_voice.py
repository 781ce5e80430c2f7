"""The split Piper graph reproduces the original model, and windowed decode equals one-shot decode."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from streamvox.engine.audio.windows import WindowPlan
from streamvox.engine.backends.piper import voice as piper_voice
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.graph import GraphSplitError, split_piper_graph
from streamvox.engine.backends.piper.segment import PiperSegment
from streamvox.engine.backends.piper.voice import HOP_LENGTH, FrontOutput, PiperVoice, VoiceLoadError

from tests.helpers.audio import snr_db

TEXT = "Streaming speech should start quickly, sound natural, and never click between chunks."


def test_split_matches_the_original_graph_with_noise_off(voice: PiperVoice) -> None:
    ids = voice.text_to_ids(TEXT)
    original = ort.InferenceSession(str(bundled_voice_path()), providers=["CPUExecutionProvider"])
    # Zero noise scales make the original graph's random draws irrelevant.
    reference = original.run(
        None,
        {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),
        },
    )[0].reshape(-1)
    front = voice.front(ids, None, noise_scale=0.0, noise_w=0.0)
    ours = voice.decode(voice.flow(front.z_p))
    assert len(ours) == len(reference) == front.frames * HOP_LENGTH
    assert snr_db(reference, ours) > 60
    assert int(front.durations.sum()) == front.frames


def windowed(voice: PiperVoice, front: FrontOutput, plan: WindowPlan, urgent: bool) -> np.ndarray:
    segment = PiperSegment(voice, front, plan)
    pieces = []
    while not segment.done:
        pieces.append(segment.next_window(urgent=urgent))
    return np.concatenate(pieces)


PLANS = {
    "default": WindowPlan(),
    "small windows": WindowPlan(first_frames=8, later_first_frames=8, max_frames=32, growth=2.0, flow_chunk_frames=40),
    "decoder context 8": WindowPlan(context_frames=8, later_first_frames=64, max_frames=64, growth=2.0),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
@pytest.mark.parametrize("urgent", [True, False])
def test_windowed_synthesis_equals_one_shot(voice: PiperVoice, plan: WindowPlan, urgent: bool) -> None:
    front = voice.front(voice.text_to_ids(TEXT), None)
    one_shot = voice.decode(voice.flow(front.z_p))
    streamed = windowed(voice, front, plan, urgent)
    assert len(streamed) == len(one_shot) == front.frames * HOP_LENGTH
    assert snr_db(one_shot, streamed) >= 60


@pytest.mark.parametrize(
    "plan",
    [
        WindowPlan(context_frames=0, later_first_frames=64, max_frames=64, growth=2.0),
        WindowPlan(flow_context_frames=0, flow_chunk_frames=32),
    ],
    ids=["no decoder context", "no flow context"],
)
def test_without_context_the_seams_are_audible(voice: PiperVoice, plan: WindowPlan) -> None:
    """The control: the SNR bound above is meaningful because dropping either context fails it."""
    front = voice.front(voice.text_to_ids(TEXT), None)
    one_shot = voice.decode(voice.flow(front.z_p))
    assert snr_db(one_shot, windowed(voice, front, plan, urgent=False)) < 40


def test_seeded_front_is_reproducible_and_seed_dependent(voice: PiperVoice) -> None:
    ids = voice.text_to_ids("A seeded sentence.")
    a = voice.front(ids, np.random.default_rng(7))
    b = voice.front(ids, np.random.default_rng(7))
    c = voice.front(ids, np.random.default_rng(8))
    np.testing.assert_array_equal(a.z_p, b.z_p)
    assert a.z_p.shape != c.z_p.shape or not np.array_equal(a.z_p, c.z_p)


def test_noise_buffer_regrows_without_changing_the_result(voice: PiperVoice, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = voice.text_to_ids("A sentence long enough to need more prior noise than the first guess.")
    expected = voice.front(ids, np.random.default_rng(3))
    monkeypatch.setattr(piper_voice, "_FRAMES_PER_ID_GUESS", 0)
    regrown = voice.front(ids, np.random.default_rng(3))
    assert expected.frames > 64
    np.testing.assert_array_equal(expected.z_p, regrown.z_p)


def test_speed_changes_duration(voice: PiperVoice) -> None:
    ids = voice.text_to_ids("Speed check sentence.")
    normal = voice.front(ids, None, length_scale=1.0)
    slow = voice.front(ids, None, length_scale=1.5)
    assert slow.frames > normal.frames * 1.3


def test_unspeakable_text_has_no_ids(voice: PiperVoice) -> None:
    assert voice.text_to_ids("") == []
    assert voice.text_to_ids("   ") == []


def test_load_errors(tmp_path) -> None:
    with pytest.raises(VoiceLoadError):
        PiperVoice.load(tmp_path / "missing.onnx")
    model = tmp_path / "v.onnx"
    model.write_bytes(b"not onnx")
    with pytest.raises(VoiceLoadError):
        PiperVoice.load(model)
    (tmp_path / "v.onnx.json").write_text("{}")
    with pytest.raises(VoiceLoadError):
        PiperVoice.load(model)


def test_split_rejects_a_graph_that_is_not_piper() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["out"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(GraphSplitError):
        split_piper_graph(helper.make_model(graph).SerializeToString())


def test_a_voice_given_by_path_loads(tmp_path) -> None:
    """Any Piper voice (.onnx + .onnx.json) is served: copy the bundled one under another name."""
    src = bundled_voice_path()
    model = tmp_path / "en_US-copy-medium.onnx"
    model.symlink_to(src)
    (tmp_path / "en_US-copy-medium.onnx.json").write_bytes(src.with_name(src.name + ".json").read_bytes())
    loaded = PiperVoice.load(model)
    assert loaded.id == "en_US-copy-medium" and loaded.sample_rate == 22050

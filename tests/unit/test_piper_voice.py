"""The split Piper graph reproduces the original model, and a segment decoded window by window
(streamed, or with context frames) equals one-shot decode."""

from __future__ import annotations

import numpy as np
import onnx
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


def windowed(voice: PiperVoice, front: FrontOutput, plan: WindowPlan, urgent: bool, first: bool = True) -> np.ndarray:
    segment = PiperSegment(voice, front, plan, first=first)
    pieces = []
    while not segment.done:
        pieces.append(segment.next_window(urgent=urgent))
    return np.concatenate(pieces)


@pytest.fixture(params=["streaming", "windowed"])
def either_voice(request: pytest.FixtureRequest, voice: PiperVoice, windowed_voice: PiperVoice) -> PiperVoice:
    """The bundled voice with each of its two window decoders."""
    chosen = voice if request.param == "streaming" else windowed_voice
    assert (chosen.streaming is not None) == (request.param == "streaming")
    return chosen


def decoder_reach(voice: PiperVoice, plan: WindowPlan) -> int:
    """Frames of ``z`` a window's decode reads past its end."""
    return plan.context_frames if voice.streaming is None else voice.streaming.lookahead_frames


PLANS = {
    "default": WindowPlan(),
    "small windows": WindowPlan(first_frames=8, later_first_frames=8, max_frames=32, growth=2.0, flow_chunk_frames=40),
    "decoder context 8": WindowPlan(context_frames=8, later_first_frames=64, max_frames=64, growth=2.0),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
@pytest.mark.parametrize("urgent", [True, False])
def test_windowed_synthesis_equals_one_shot(either_voice: PiperVoice, plan: WindowPlan, urgent: bool) -> None:
    voice = either_voice
    front = voice.front(voice.text_to_ids(TEXT), None)
    one_shot = voice.decode(voice.flow(front.z_p))
    streamed = windowed(voice, front, plan, urgent)
    assert len(streamed) == len(one_shot) == front.frames * HOP_LENGTH
    assert snr_db(one_shot, streamed) >= 60


@pytest.mark.parametrize("plan", [PLANS["default"], PLANS["small windows"]], ids=["default", "small windows"])
def test_a_later_segment_windowed_equals_one_shot(either_voice: PiperVoice, plan: WindowPlan) -> None:
    voice = either_voice
    front = voice.front(voice.text_to_ids(TEXT), None)
    one_shot = voice.decode(voice.flow(front.z_p))
    streamed = windowed(voice, front, plan, urgent=False, first=False)
    assert len(streamed) == len(one_shot)
    assert snr_db(one_shot, streamed) >= 60


def test_the_default_decoder_context_is_the_decoders_receptive_field(voice: PiperVoice) -> None:
    """Windows decoded from the same latent frames with the default context match the one-shot
    decode to float rounding; one frame less of context does not (so the default is no larger
    than it must be, and no smaller)."""
    front = voice.front(voice.text_to_ids(TEXT), None)
    z = voice.flow(front.z_p)
    one_shot = voice.decode(z, urgent=False)
    context = WindowPlan().context_frames

    def by_windows(context: int, size: int = 24) -> np.ndarray:
        starts = range(0, front.frames, size)
        pieces = [voice.decode_window(z, s, min(front.frames, s + size), context, urgent=False) for s in starts]
        return np.concatenate(pieces)

    assert snr_db(one_shot, by_windows(context)) > 100
    assert snr_db(one_shot, by_windows(context - 1)) < 95


def _flow_calls(voice: PiperVoice, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    flow_window = voice.flow_window

    def recording(z_p: np.ndarray, start: int, end: int, *args: object, **kwargs: object) -> np.ndarray:
        calls.append((start, end))
        return flow_window(z_p, start, end, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(voice, "flow_window", recording)
    return calls


def test_a_later_segment_runs_its_flow_in_one_call(either_voice: PiperVoice, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its first window is not the stream's first audio: one flow call (no second call, no second
    set of context frames), where a stream's first segment starts on a chunk for its first window."""
    voice = either_voice
    front = voice.front(voice.text_to_ids("A later sentence of a reply."), None)
    plan = WindowPlan()
    assert front.frames + plan.context_frames <= plan.flow_chunk_frames
    calls = _flow_calls(voice, monkeypatch)
    windowed(voice, front, plan, urgent=False, first=False)
    assert calls == [(0, front.frames)]
    calls.clear()
    windowed(voice, front, plan, urgent=False, first=True)
    assert len(calls) == 2 and calls[0] == (0, plan.first_frames + decoder_reach(voice, plan))


def test_the_flow_stops_at_the_last_frame_the_decoder_reads(
    either_voice: PiperVoice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A segment read with its neighbours decodes only its own frames: the flow skips the rest of
    the preview (it is context to the encoder, and to the flow through its context frames)."""
    voice = either_voice
    front = voice.front(voice.text_to_ids(TEXT), None)
    plan = WindowPlan()
    own = (30, front.frames // 2)
    calls = _flow_calls(voice, monkeypatch)
    segment = PiperSegment(voice, front, plan, first=False, frames=own)
    while not segment.done:
        segment.next_window()
    assert calls[0][0] == own[0] - plan.context_frames
    assert calls[-1][1] == own[1] + decoder_reach(voice, plan) < front.frames


@pytest.mark.parametrize(
    "plan",
    [
        WindowPlan(context_frames=0, later_first_frames=64, max_frames=64, growth=2.0),
        WindowPlan(flow_context_frames=0, flow_chunk_frames=32),
    ],
    ids=["no decoder context", "no flow context"],
)
def test_without_context_the_seams_are_audible(windowed_voice: PiperVoice, plan: WindowPlan) -> None:
    """The control: the SNR bound above is meaningful because dropping either context fails it."""
    voice = windowed_voice
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


def _export_up_to_the_prior() -> onnx.ModelProto:
    """The unmodified export from its inputs to the prior sample ``z_p``, with the prior's noise
    an input ``noise_z`` instead of a ``RandomNormalLike`` (and the duration noise ``noise_dp``)."""
    model = onnx.load(str(bundled_voice_path()))
    randoms = [n for n in model.graph.node if n.op_type == "RandomNormalLike"]
    prior_noise = next(n for n in randoms if not n.name.startswith("/dp/"))
    prior = next(n for n in model.graph.node if n.op_type == "Add" and "/Mul_6_output_0" in n.input)
    for node in randoms:
        source = "noise_z" if node is prior_noise else "noise_dp"
        node.CopyFrom(onnx.helper.make_node("Identity", [source], [node.output[0]]))
    model.graph.input.extend(
        [
            onnx.helper.make_tensor_value_info("noise_z", onnx.TensorProto.FLOAT, [1, "channels", "frames"]),
            onnx.helper.make_tensor_value_info("noise_dp", onnx.TensorProto.FLOAT, [1, 2, "phonemes"]),
        ]
    )
    return onnx.utils.Extractor(model).extract_model(
        ["input", "input_lengths", "scales", "noise_dp", "noise_z"], [prior.output[0]]
    )


def test_the_prior_sample_is_the_exports_for_the_same_noise(voice: PiperVoice, monkeypatch: pytest.MonkeyPatch) -> None:
    """The encoder stops before the prior's noise, which is drawn for exactly the frames the
    durations give and scaled as the export scales it: the same float32 values."""
    from streamvox.engine.backends.piper import graph

    export = ort.InferenceSession(_export_up_to_the_prior().SerializeToString(), providers=["CPUExecutionProvider"])
    monkeypatch.setattr(graph, "lift_each_convolution", lambda part: part)
    unlifted = PiperVoice(voice.id, voice.model_path, voice.config, stream_decode=False)
    monkeypatch.undo()
    for text, scales in ((TEXT, (0.667, 1.0, 0.8)), ("Yes... well, maybe!", (0.5, 1.3, 0.6))):
        ids = voice.text_to_ids(text)
        front = unlifted.front(ids, np.random.default_rng(3), scales[1], scales[0], scales[2])
        rng = np.random.default_rng(3)
        noise_dp = rng.standard_normal((1, 2, len(ids)), dtype=np.float32)
        noise_z = piper_voice._prior_noise(int(rng.integers(0, 2**63 - 1)), voice.z_channels, front.frames)
        (want,) = export.run(
            None,
            {
                "input": np.array([ids], dtype=np.int64),
                "input_lengths": np.array([len(ids)], dtype=np.int64),
                "scales": np.array(scales, dtype=np.float32),
                "noise_dp": noise_dp,
                "noise_z": noise_z,
            },
        )
        np.testing.assert_array_equal(front.z_p, want[0])
        # The served encoder (its convolutions lifted) gives the same durations, the prior to rounding.
        served = voice.front(ids, np.random.default_rng(3), scales[1], scales[0], scales[2])
        np.testing.assert_array_equal(served.durations, front.durations)
        assert snr_db(front.z_p.reshape(-1), served.z_p.reshape(-1)) > 100


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

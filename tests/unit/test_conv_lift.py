"""Height-one 2-D convolutions compute what the 1-D graph computed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.conv_lift import lift_convolutions, lift_each_convolution
from streamvox.engine.backends.piper.graph import lift_piper_graph, split_piper_graph

from tests.helpers.audio import snr_db

CHANNELS = 8
COND = 3


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def _hifigan_like() -> onnx.ModelProto:
    """A decoder in miniature: a conditioned input convolution, a strided transposed
    convolution, a dilated residual convolution, broadcasts of every rank, and a tail
    read by an operator the rewrite does not lift."""
    rng = np.random.default_rng(7)
    nodes = [
        helper.make_node("Conv", ["x", "w_pre", "b_pre"], ["pre"], kernel_shape=[5], pads=[2, 2]),
        helper.make_node("Conv", ["g", "w_cond"], ["cond"], kernel_shape=[1]),  # [N, C, 1], stays 1-D
        helper.make_node("Add", ["pre", "cond"], ["conditioned"]),
        helper.make_node("LeakyRelu", ["conditioned"], ["act"], alpha=0.1),
        helper.make_node("ConvTranspose", ["act", "w_up", "b_up"], ["up"], kernel_shape=[8], strides=[4], pads=[2, 2]),
        helper.make_node("Conv", ["up", "w_res"], ["res"], kernel_shape=[3], dilations=[3], pads=[3, 3]),
        helper.make_node("Add", ["res", "up"], ["summed"]),
        helper.make_node("Mul", ["summed", "per_channel"], ["scaled"]),  # [C, 1]
        helper.make_node("Div", ["scaled", "two"], ["halved"]),  # scalar
        helper.make_node("Add", ["halved", "per_sample"], ["shifted"]),  # [T * 4]
        helper.make_node("Tanh", ["shifted"], ["y"]),
        helper.make_node("ReduceMean", ["y"], ["level"], axes=[2], keepdims=1),
    ]
    frames = 12
    initializers = [
        _weight(rng, "w_pre", CHANNELS, CHANNELS, 5),
        _weight(rng, "b_pre", CHANNELS),
        _weight(rng, "w_cond", CHANNELS, COND, 1),
        _weight(rng, "w_up", CHANNELS, CHANNELS // 2, 8),
        _weight(rng, "b_up", CHANNELS // 2),
        _weight(rng, "w_res", CHANNELS // 2, CHANNELS // 2, 3),
        _weight(rng, "per_channel", CHANNELS // 2, 1),
        numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
        _weight(rng, "per_sample", frames * 4),
    ]
    graph = helper.make_graph(
        nodes,
        "mini",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, frames]),
            helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, COND, 1]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS // 2, frames * 4]),
            helper.make_tensor_value_info("level", TensorProto.FLOAT, [1, CHANNELS // 2, 1]),
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _coupling_like() -> onnx.ModelProto:
    """A flow's coupling layer in miniature: a channel flip (negative-step Slice), Split, a
    masked gated convolution read through channel Slices, zeros_like from Shape, and Concat."""
    rng = np.random.default_rng(11)
    half, hidden = CHANNELS // 2, 6
    big = 9223372036854775807
    constants = {
        "flip_starts": [-1], "flip_ends": [-big], "flip_axes": [1], "flip_steps": [-1],
        "lo_starts": [0], "lo_ends": [hidden], "hi_starts": [hidden], "hi_ends": [big],
        "ch_axes": [-2], "halves": [half, half], "trim_starts": [2], "time_axes": [-1],
    }  # fmt: skip
    initializers = [numpy_helper.from_array(np.array(v, dtype=np.int64), k) for k, v in constants.items()]
    initializers += [
        _weight(rng, "w_in", 2 * hidden, half, 3),
        _weight(rng, "w_post", half, hidden, 1),
    ]
    nodes = [
        helper.make_node("Slice", ["x", "flip_starts", "flip_ends", "flip_axes", "flip_steps"], ["flipped"]),
        helper.make_node("Split", ["flipped", "halves"], ["x0", "x1"], axis=1),
        helper.make_node("Mul", ["x0", "mask"], ["masked"]),
        helper.make_node("Conv", ["masked", "w_in"], ["gates"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Shape", ["gates"], ["gates_shape"]),
        helper.make_node("ConstantOfShape", ["gates_shape"], ["zeros"]),
        helper.make_node("Add", ["gates", "zeros"], ["gates0"]),
        helper.make_node("Slice", ["gates0", "lo_starts", "lo_ends", "ch_axes"], ["lo"]),
        helper.make_node("Slice", ["gates0", "hi_starts", "hi_ends", "ch_axes"], ["hi"]),
        helper.make_node("Tanh", ["lo"], ["t"]),
        helper.make_node("Sigmoid", ["hi"], ["g"]),
        helper.make_node("Mul", ["t", "g"], ["acts"]),
        helper.make_node("Conv", ["acts", "w_post"], ["m"], kernel_shape=[1]),
        helper.make_node("Sub", ["x1", "m"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "mask"], ["x1_new"]),
        helper.make_node("Concat", ["x0", "x1_new"], ["y"], axis=1),
        helper.make_node("Shape", ["y"], ["y_shape"]),  # read by something else: stays rank 3
        helper.make_node("Slice", ["y", "trim_starts", "flip_ends", "time_axes", "flip_steps"], ["backwards"]),
    ]
    frames = 10
    graph = helper.make_graph(
        nodes,
        "coupling",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, frames]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, frames]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, frames]),
            helper.make_tensor_value_info("y_shape", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("backwards", TensorProto.FLOAT, [1, CHANNELS, 3]),
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _conv_weight_ranks(model: onnx.ModelProto) -> list[int]:
    dims = {t.name: len(t.dims) for t in model.graph.initializer}
    return [dims[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def _lifted(original: onnx.ModelProto, source: str | None) -> onnx.ModelProto:
    lifted = onnx.ModelProto()
    lifted.CopyFrom(original)
    lift_convolutions(lifted, source)
    onnx.checker.check_model(lifted)
    return lifted


def _assert_same_results(original: onnx.ModelProto, lifted: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    for want, have in zip(_run(original, feeds), _run(lifted, feeds), strict=True):
        assert have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("source", "ranks"), [("x", [3, 4, 4, 4]), ("conditioned", [3, 3, 4, 4])])
def test_the_lifted_graph_computes_what_the_original_did(source: str, ranks: list[int]) -> None:
    """From the input, or from a tensor inside the graph (the conditioned input convolution's
    output: the convolutions before it stay 1-D)."""
    original = _hifigan_like()
    lifted = _lifted(original, source)
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, CHANNELS, 12)).astype(np.float32),
        "g": rng.standard_normal((1, COND, 1)).astype(np.float32),
    }
    _assert_same_results(original, lifted, feeds)
    # Every convolution on the path from the source is 2-D; the speaker's stays 1-D.
    assert sorted(_conv_weight_ranks(lifted)) == ranks
    assert [o.name for o in lifted.graph.output] == ["y", "level"]


def test_channel_slices_splits_zeros_and_concat_stay_lifted() -> None:
    original = _coupling_like()
    lifted = _lifted(original, "x")
    rng = np.random.default_rng(4)
    mask = np.ones((1, 1, 10), dtype=np.float32)
    mask[..., 7:] = 0
    _assert_same_results(
        original, lifted, {"x": rng.standard_normal((1, CHANNELS, 10)).astype(np.float32), "mask": mask}
    )
    assert sorted(_conv_weight_ranks(lifted)) == [4, 4]
    # Squeezed back to rank 3 only for the graph's outputs (y, which the last Shape reads too,
    # and the time slice): nothing inside the coupling leaves the height-one form.
    assert [n.op_type for n in lifted.graph.node].count("Squeeze") == 2


def test_only_a_rank_three_tensor_can_be_lifted() -> None:
    with pytest.raises(ValueError, match="rank"):
        lift_convolutions(_hifigan_like(), "per_sample")


def _attention_like() -> onnx.ModelProto:
    """Convolutions between operators with no height-one form: a convolution, a transpose and
    matrix product, two convolutions in a row with a masked activation between them, and the
    input read by two convolutions."""
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", ["x", "w_q"], ["q"], kernel_shape=[1]),
        helper.make_node("Conv", ["x", "w_k", "b_k"], ["k"], kernel_shape=[1]),
        helper.make_node("Transpose", ["q"], ["q_t"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q_t", "k"], ["scores"]),
        helper.make_node("MatMul", ["k", "scores"], ["mixed"]),
        helper.make_node("Conv", ["mixed", "w_1", "b_1"], ["h"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["h"], ["h_act"]),
        helper.make_node("Mul", ["h_act", "mask"], ["h_masked"]),
        helper.make_node("Conv", ["h_masked", "w_2"], ["y"], kernel_shape=[3], pads=[2, 2], dilations=[2]),
    ]
    initializers = [
        _weight(rng, "w_q", CHANNELS, CHANNELS, 1),
        _weight(rng, "w_k", CHANNELS, CHANNELS, 1),
        _weight(rng, "b_k", CHANNELS),
        _weight(rng, "w_1", 2 * CHANNELS, CHANNELS, 3),
        _weight(rng, "b_1", 2 * CHANNELS),
        _weight(rng, "w_2", CHANNELS, 2 * CHANNELS, 3),
    ]
    graph = helper.make_graph(
        nodes,
        "attention_like",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, "t"]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, "t"]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, "t"]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, "t", "t"]),
        ],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("opset", [11, 15])
def test_each_convolution_lifted_alone_computes_what_the_original_did(opset: int) -> None:
    original = _attention_like()
    original.opset_import[0].version = opset
    lifted = onnx.ModelProto()
    lifted.CopyFrom(original)
    lift_each_convolution(lifted)
    onnx.checker.check_model(lifted)
    rng = np.random.default_rng(2)
    mask = np.ones((1, 1, 9), dtype=np.float32)
    mask[..., 6:] = 0
    x = rng.standard_normal((1, CHANNELS, 9)).astype(np.float32)
    _assert_same_results(original, lifted, {"x": x, "mask": mask})
    assert _conv_weight_ranks(lifted) == [4, 4, 4, 4]
    ops = [n.op_type for n in lifted.graph.node]
    # x is unsqueezed once for its two readers; the second of two convolutions in a row reads
    # the first's unsqueezed output only through the activation, which is not lifted.
    assert ops.count("Unsqueeze") == 3 and ops.count("Squeeze") == 4
    assert {t.name for t in lifted.graph.initializer}.isdisjoint({"w_q", "w_k", "w_1", "w_2"})


def test_the_bundled_encoder_lifted_gives_the_same_prior_and_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamvox.engine.backends.piper.graph as graph
    from streamvox.engine.backends.piper.graph import NOISE_DP
    from streamvox.engine.backends.piper.voice import PiperVoiceConfig
    from streamvox.engine.text.phonemes import phoneme_ids, phonemize

    path = bundled_voice_path()
    config = PiperVoiceConfig.from_json(path.with_name(path.name + ".json"))
    lifted = split_piper_graph(path.read_bytes())
    monkeypatch.setattr(graph, "lift_each_convolution", lambda part: part)
    plain = split_piper_graph(path.read_bytes())
    assert all(rank == 4 for rank in _conv_weight_ranks(onnx.load_from_string(lifted.encoder)))
    assert all(rank == 3 for rank in _conv_weight_ranks(onnx.load_from_string(plain.encoder)))
    rng = np.random.default_rng(5)
    for text in ("The river rose over its banks by morning.", "Yes, of course; call me at nine!"):
        (sentence,) = phonemize(text, config.espeak_voice)
        ids = phoneme_ids(sentence, config.phoneme_id_map)
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([0.667, 1.0, 0.8], dtype=np.float32),
            NOISE_DP: rng.standard_normal((1, 2, len(ids))).astype(np.float32),
        }
        # The prior's mean, its noise's factors, then the durations.
        want, have = (
            ort.InferenceSession(split.encoder, providers=["CPUExecutionProvider"]).run(None, feeds)
            for split in (plain, lifted)
        )
        np.testing.assert_array_equal(have[-1], want[-1])
        for a, b in zip(want[:-1], have[:-1], strict=True):
            assert snr_db(a.reshape(-1), b.reshape(-1)) > 100


def test_the_bundled_flow_and_decoder_lifted_equal_them_unlifted(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamvox.engine.backends.piper.graph as graph

    model = bundled_voice_path().read_bytes()
    lifted = split_piper_graph(model)
    monkeypatch.setattr(graph, "lift_convolutions", lambda part, source: part)
    plain = split_piper_graph(model)
    rng = np.random.default_rng(3)
    z_p = rng.standard_normal((1, lifted.z_channels, 60)).astype(np.float32)
    mask = np.ones((1, 1, 60), dtype=np.float32)
    for part, feeds in (("flow", {"z_p": z_p, "z_mask": mask}), ("decoder", {"z": z_p})):
        sessions = [
            ort.InferenceSession(getattr(split, part), providers=["CPUExecutionProvider"]) for split in (plain, lifted)
        ]
        want, have = (session.run(None, feeds)[0] for session in sessions)
        assert have.shape == want.shape
        assert snr_db(want.reshape(-1), have.reshape(-1)) > 100, part
        assert all(rank == 4 for rank in _conv_weight_ranks(onnx.load_from_string(getattr(lifted, part)))), part


def test_the_lifted_whole_graph_speaks_as_the_export_does() -> None:
    """The benchmarks' second floor: the unsplit export with its convolutions lifted."""
    from streamvox.engine.backends.piper.voice import PiperVoiceConfig
    from streamvox.engine.text.phonemes import phoneme_ids, phonemize

    path = bundled_voice_path()
    config = PiperVoiceConfig.from_json(path.with_name(path.name + ".json"))
    (sentence,) = phonemize("The river rose over its banks by morning.", config.espeak_voice)
    ids = phoneme_ids(sentence, config.phoneme_id_map)
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32),  # noise off: deterministic
    }
    export = path.read_bytes()
    lifted = lift_piper_graph(export)
    want, have = (
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feeds)[0] for m in (export, lifted)
    )
    assert have.shape == want.shape
    assert snr_db(want.reshape(-1), have.reshape(-1)) > 90
    ranks = _conv_weight_ranks(onnx.load_from_string(lifted))
    # The decoder's 20 convolutions and 3 transposed ones, the flow's 40, and the encoder's one by one.
    assert ranks.count(3) == 0
    assert len(ranks) == len(_conv_weight_ranks(onnx.load_from_string(export)))

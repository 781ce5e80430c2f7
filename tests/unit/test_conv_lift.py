"""Height-one 2-D convolutions compute what the 1-D graph computed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.conv_lift import lift_convolutions
from streamvox.engine.backends.piper.graph import split_piper_graph

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


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _conv_weight_ranks(model: onnx.ModelProto) -> list[int]:
    dims = {t.name: len(t.dims) for t in model.graph.initializer}
    return [dims[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def test_the_lifted_graph_computes_what_the_original_did() -> None:
    original = _hifigan_like()
    lifted = onnx.ModelProto()
    lifted.CopyFrom(original)
    lift_convolutions(lifted, "x")
    onnx.checker.check_model(lifted)
    rng = np.random.default_rng(1)
    feeds = {
        "x": rng.standard_normal((1, CHANNELS, 12)).astype(np.float32),
        "g": rng.standard_normal((1, COND, 1)).astype(np.float32),
    }
    expected, got = _run(original, feeds), _run(lifted, feeds)
    for want, have in zip(expected, got, strict=True):
        assert have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    # Every convolution on the path from x is 2-D; the speaker's stays 1-D.
    assert sorted(_conv_weight_ranks(lifted)) == [3, 4, 4, 4]
    assert [o.name for o in lifted.graph.output] == ["y", "level"]


def test_a_tensor_inside_the_graph_can_be_the_source() -> None:
    original = _hifigan_like()
    lifted = onnx.ModelProto()
    lifted.CopyFrom(original)
    lift_convolutions(lifted, "conditioned")
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((1, CHANNELS, 12)).astype(np.float32),
        "g": rng.standard_normal((1, COND, 1)).astype(np.float32),
    }
    for want, have in zip(_run(original, feeds), _run(lifted, feeds), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-6)
    assert sorted(_conv_weight_ranks(lifted)) == [3, 3, 4, 4]


def test_only_a_rank_three_tensor_can_be_lifted() -> None:
    with pytest.raises(ValueError, match="rank"):
        lift_convolutions(_hifigan_like(), "per_sample")


def test_the_bundled_decoder_lifted_equals_it_unlifted(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamvox.engine.backends.piper.graph as graph

    model = bundled_voice_path().read_bytes()
    lifted = split_piper_graph(model)
    monkeypatch.setattr(graph, "lift_convolutions", lambda decoder, source: decoder)
    plain = split_piper_graph(model)
    z = np.random.default_rng(3).standard_normal((1, lifted.z_channels, 60)).astype(np.float32)
    want = ort.InferenceSession(plain.decoder, providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    have = ort.InferenceSession(lifted.decoder, providers=["CPUExecutionProvider"]).run(None, {"z": z})[0]
    assert have.shape == want.shape
    assert snr_db(want.reshape(-1), have.reshape(-1)) > 100
    assert all(rank == 4 for rank in _conv_weight_ranks(onnx.load_from_string(lifted.decoder)))

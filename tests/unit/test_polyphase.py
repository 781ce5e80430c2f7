"""Transposed convolutions split into phases compute what they computed."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from streamvox.engine.backends.piper.polyphase import split_transposed_convolutions

IN_CHANNELS, OUT_CHANNELS, FRAMES = 6, 4, 9


def _upsampler(kernel: int, stride: int, pads: tuple[int, int], bias: bool = True, **extra: object) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    weight = rng.standard_normal((IN_CHANNELS, OUT_CHANNELS, 1, kernel)).astype(np.float32)
    initializers = [numpy_helper.from_array(weight, "w")]
    inputs = ["x", "w"]
    if bias:
        initializers.append(numpy_helper.from_array(rng.standard_normal(OUT_CHANNELS).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(
        "ConvTranspose",
        inputs,
        ["up"],
        name="up",
        kernel_shape=[1, kernel],
        strides=[1, stride],
        pads=[0, pads[0], 0, pads[1]],
        **extra,
    )
    graph = helper.make_graph(
        [node, helper.make_node("LeakyRelu", ["up"], ["y"], alpha=0.1)],
        "upsampler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN_CHANNELS, 1, FRAMES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize(
    ("kernel", "stride", "pads", "bias"),
    [
        (16, 8, (4, 4), True),  # HiFi-GAN's 8x layers
        (8, 4, (2, 2), True),  # and its 4x
        (4, 2, (1, 1), False),
        (6, 3, (0, 0), True),  # no padding: every phase sample is kept
        (6, 2, (3, 1), True),  # three taps per phase, uneven pads
        (4, 4, (0, 0), True),  # one tap per phase
    ],
)
def test_phases_compute_the_transposed_convolution(kernel: int, stride: int, pads: tuple[int, int], bias: bool) -> None:
    original = _upsampler(kernel, stride, pads, bias)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert split_transposed_convolutions(rewritten) == 1
    assert "ConvTranspose" not in {n.op_type for n in rewritten.graph.node}
    assert {t.name for t in rewritten.graph.initializer}.isdisjoint({"w", "b"})  # replaced weights dropped
    x = np.random.default_rng(5).standard_normal((1, IN_CHANNELS, 1, FRAMES)).astype(np.float32)
    want, have = _run(original, x), _run(rewritten, x)
    assert have.shape == want.shape
    np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "extra",
    [{"group": 2}, {"output_padding": [0, 1]}, {"dilations": [1, 2]}],
)
def test_other_transposed_convolutions_are_left_alone(extra: dict[str, object]) -> None:
    model = _upsampler(8, 4, (2, 2), **extra)
    if "group" in extra:  # a grouped layer's weight is [C_in, C_out / group, 1, K]
        weight = next(t for t in model.graph.initializer if t.name == "w")
        weight.CopyFrom(numpy_helper.from_array(np.ones((IN_CHANNELS, 2, 1, 8), dtype=np.float32), "w"))
    before = model.SerializeToString()
    assert split_transposed_convolutions(model) == 0
    assert model.SerializeToString() == before


def test_a_one_dimensional_transposed_convolution_is_left_alone() -> None:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[8], strides=[4], pads=[2, 2])
    weight = numpy_helper.from_array(np.ones((2, 2, 8), dtype=np.float32), "w")
    graph = helper.make_graph(
        [node],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight],
    )
    assert split_transposed_convolutions(helper.make_model(graph)) == 0

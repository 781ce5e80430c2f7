"""The FLOP count behind ``scripts/piper_flops.py`` (how close the voice runs to the core's rate)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from scripts.piper_flops import arithmetic


def test_convolutions_and_matrix_products_are_counted_at_the_given_shapes() -> None:
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 5)).astype(np.float32), "w_conv"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 1, 3)).astype(np.float32), "w_grouped"),
        numpy_helper.from_array(rng.standard_normal((4, 2, 4)).astype(np.float32), "w_up"),
        numpy_helper.from_array(rng.standard_normal((7, 6)).astype(np.float32), "w_proj"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["h"], kernel_shape=[5], pads=[2, 2]),  # [1, 4, T]
        helper.make_node("Unsqueeze", ["h", "axis"], ["h4"]),
        helper.make_node("Conv", ["h4", "w_grouped"], ["g4"], kernel_shape=[1, 3], pads=[0, 1, 0, 1], group=2),
        helper.make_node("Squeeze", ["g4", "axis"], ["g"]),
        helper.make_node("ConvTranspose", ["g", "w_up"], ["up"], kernel_shape=[4], strides=[2], pads=[1, 1]),
        helper.make_node("MatMul", ["y", "w_proj"], ["projected"]),
    ]
    graph = helper.make_graph(
        nodes,
        "counted",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "t"]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "n", 7]),
        ],
        [
            helper.make_tensor_value_info("up", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("projected", TensorProto.FLOAT, None),
        ],
        [*weights, numpy_helper.from_array(np.array([2], dtype=np.int64), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]).SerializeToString()
    t, n = 10, 9
    conv = 2 * (4 * t) * (3 * 5)
    grouped = 2 * (4 * t) * (2 * 3)  # each output reads its group's 2 channels
    transposed = 2 * (4 * t) * (2 * 4)  # each input sample spreads over 2 channels x 4 taps
    matmul = 2 * (n * 6) * 7
    assert arithmetic(model, {"x": (1, 3, t), "y": (1, n, 7)}) == conv + grouped + transposed + matmul
    # A shape inference cannot tell counts nothing.
    assert arithmetic(model, {"x": (1, 3, t)}) == conv + grouped + transposed

"""Run a height-one transposed convolution as a stride-1 convolution and an interleave.

A transposed convolution with stride ``s`` and kernel ``K = J * s`` gives output
sample ``q * s + r`` (before its padding is cut) from input frames ``q - J + 1 .. q``
through kernel taps ``r, r + s, ..``: ``s`` ordinary convolutions of kernel
``J``, one per phase ``r``.  Written as one convolution with ``s`` times the
output channels, then a reshape-transpose-reshape that interleaves the phases
and a slice that cuts the padding, it computes the same sums (float rounding
aside) in a form onnxruntime's blocked 2-D kernels run, where its
``ConvTranspose`` has only the generic path (measured on the bundled voice's
decoder, one thread: the three upsampling layers took 26 ms of 169 per 532
frames; after this rewrite their convolutions and interleaves take about 18).

Only height-one (lifted, see ``conv_lift``) transposed convolutions with one
group, no dilation, explicit pads and ``K`` a multiple of the stride are
rewritten; any other is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from streamvox.engine.backends.piper.conv_lift import drop_unread_initializers

_NO_END = np.iinfo(np.int64).max


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return False
    if len(node.input) > 2 and node.input[2] and node.input[2] not in weights:
        return False
    attributes = _attributes(node)
    weight = weights[node.input[1]]
    kernel = list(attributes.get("kernel_shape", list(weight.dims[2:])))
    strides = list(attributes.get("strides", [1, 1]))
    return (
        len(weight.dims) == 4
        and weight.dims[2] == 1
        and kernel[0] == 1
        and strides[0] == 1
        and kernel[1] % strides[1] == 0
        and attributes.get("group", 1) == 1
        and list(attributes.get("dilations", [1, 1])) == [1, 1]
        and attributes.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and "output_padding" not in attributes
        and "output_shape" not in attributes
    )


def _phase_nodes(
    node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], graph: onnx.GraphProto, prefix: str
) -> list[onnx.NodeProto]:
    attributes = _attributes(node)
    weight = numpy_helper.to_array(weights[node.input[1]])  # [C_in, C_out, 1, K]
    in_channels, out_channels, _, kernel = weight.shape
    stride = int(list(attributes.get("strides", [1, 1]))[1])
    pads = list(attributes.get("pads", [0, 0, 0, 0]))
    pad_begin, pad_end = int(pads[1]), int(pads[3])
    taps = kernel // stride
    # phases[co, r, ci, 0, m] = weight[ci, co, 0, r + (taps - 1 - m) * stride]
    phases = weight[:, :, 0, :].reshape(in_channels, out_channels, taps, stride)[:, :, ::-1, :]
    phases = np.ascontiguousarray(phases.transpose(1, 3, 0, 2)).reshape(out_channels * stride, in_channels, 1, taps)
    pad_right = max(0, (kernel - pad_end - 1) // stride)
    tail = stride * pad_right + stride - kernel + pad_end
    constants = {
        "w": phases.astype(weight.dtype),
        "phases_shape": np.array([0, out_channels, stride, -1], dtype=np.int64),
        "out_shape": np.array([0, out_channels, 1, -1], dtype=np.int64),
        "starts": np.array([pad_begin], dtype=np.int64),
        "ends": np.array([-tail if tail else _NO_END], dtype=np.int64),
        "axes": np.array([3], dtype=np.int64),
    }
    conv_inputs = [node.input[0], f"{prefix}/w"]
    if len(node.input) > 2 and node.input[2]:
        constants["b"] = np.repeat(numpy_helper.to_array(weights[node.input[2]]), stride)
        conv_inputs.append(f"{prefix}/b")
    graph.initializer.extend(numpy_helper.from_array(value, f"{prefix}/{key}") for key, value in constants.items())
    return [
        helper.make_node(
            "Conv",
            conv_inputs,
            [f"{prefix}/phases"],
            name=f"{prefix}/Conv",
            kernel_shape=[1, taps],
            pads=[0, taps - 1, 0, pad_right],
            strides=[1, 1],
        ),
        helper.make_node("Reshape", [f"{prefix}/phases", f"{prefix}/phases_shape"], [f"{prefix}/split"]),
        helper.make_node("Transpose", [f"{prefix}/split"], [f"{prefix}/interleaved"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", [f"{prefix}/interleaved", f"{prefix}/out_shape"], [f"{prefix}/full"]),
        helper.make_node(
            "Slice",
            [f"{prefix}/full", f"{prefix}/starts", f"{prefix}/ends", f"{prefix}/axes"],
            [node.output[0]],
            name=f"{prefix}/Slice",
        ),
    ]


def split_transposed_convolutions(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place (see the module docstring); return how many were rewritten."""
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    rewritten = 0
    for index, node in enumerate(graph.node):
        if _rewritable(node, weights):
            nodes.extend(_phase_nodes(node, weights, graph, f"{node.name or 'ConvTranspose'}/polyphase{index}"))
            replaced.update(node.input[1:])
            rewritten += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    drop_unread_initializers(graph, replaced)
    return rewritten

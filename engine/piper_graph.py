"""Split a Piper (VITS) ONNX graph into a front and a windowable decoder.

A Piper export is one graph: phoneme ids -> text encoder -> stochastic
duration predictor -> flow -> HiFi-GAN decoder -> audio.  Streaming needs the
decoder on its own, so it can run on windows of the latent ``z``, and needs the
noise as inputs, so that a seeded session is reproducible whatever else the
process runs.  This module rewrites the graph in memory, once per voice:

* the two ``RandomNormalLike`` nodes become inputs ``noise_dp`` (duration
  predictor, shape of its template) and ``noise_z`` (flow prior, sliced in the
  graph from a caller-supplied buffer at least as long as the utterance);
* the front ends at the tensor that feeds ``dec/conv_pre`` (``z``, masked) and
  also returns the ceiled per-phoneme durations;
* the decoder starts at that tensor (and the speaker id for multi-speaker
  voices).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

NOISE_DP = "noise_dp"
NOISE_Z = "noise_z"
Z_OUTPUT = "z"
DURATIONS_OUTPUT = "durations"


class GraphSplitError(ValueError):
    """The ONNX file does not have the structure of a Piper VITS export."""


@dataclass(frozen=True)
class SplitGraph:
    """Serialized front and decoder models plus what the caller must feed them."""

    front: bytes
    decoder: bytes
    has_speaker_input: bool
    z_channels: int


def _producer_of(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    for node in graph.node:
        if tensor in node.output:
            return node
    return None


def _find_z_tensor(graph: onnx.GraphProto) -> str:
    for node in graph.node:
        if node.op_type == "Conv" and "conv_pre" in node.name and node.name.startswith("/dec"):
            return node.input[0]
    raise GraphSplitError("no /dec/conv_pre convolution: not a Piper VITS graph")


def _find_durations(graph: onnx.GraphProto) -> str:
    ceils = [n for n in graph.node if n.op_type == "Ceil"]
    if len(ceils) != 1:
        raise GraphSplitError(f"expected one Ceil node (durations), found {len(ceils)}")
    return ceils[0].output[0]


def _replace_noise(graph: onnx.GraphProto) -> None:
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if len(randoms) != 2:
        raise GraphSplitError(f"expected two RandomNormalLike nodes, found {len(randoms)}")
    dp_nodes = [n for n in randoms if n.name.startswith("/dp/")]
    z_nodes = [n for n in randoms if not n.name.startswith("/dp/")]
    if len(dp_nodes) != 1 or len(z_nodes) != 1:
        raise GraphSplitError("could not tell the duration-predictor noise from the prior noise")
    dp_node, z_node = dp_nodes[0], z_nodes[0]
    replacement = {
        id(dp_node): [helper.make_node("Identity", [NOISE_DP], [dp_node.output[0]], name="/noise_dp_in")],
        id(z_node): [
            helper.make_node("Shape", [z_node.input[0]], ["/noise_z_shape"], name="/noise_z_shape"),
            helper.make_node(
                "Constant",
                [],
                ["/noise_z_starts"],
                name="/noise_z_starts",
                value=helper.make_tensor("starts", TensorProto.INT64, [3], [0, 0, 0]),
            ),
            helper.make_node(
                "Slice", [NOISE_Z, "/noise_z_starts", "/noise_z_shape"], [z_node.output[0]], name="/noise_z_in"
            ),
        ],
    }
    nodes = []
    for node in graph.node:
        nodes.extend(replacement.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.extend(
        [
            helper.make_tensor_value_info(NOISE_DP, TensorProto.FLOAT, ["batch", 2, "phonemes"]),
            helper.make_tensor_value_info(NOISE_Z, TensorProto.FLOAT, ["batch", "channels", "max_frames"]),
        ]
    )


def _rename_output(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in model.graph.output:
        if value.name == old:
            value.name = new


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    for value in model.graph.input:
        if value.name == old:
            value.name = new


def split_piper_graph(model_bytes: bytes) -> SplitGraph:
    """Rewrite a Piper ONNX export into a seeded front and a windowable decoder."""
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    input_names = [i.name for i in graph.input]
    if "input" not in input_names or "scales" not in input_names:
        raise GraphSplitError(f"unexpected inputs {input_names}: not a Piper VITS graph")
    has_sid = "sid" in input_names
    z_tensor = _find_z_tensor(graph)
    durations = _find_durations(graph)
    conv_pre = next(n for n in graph.node if n.op_type == "Conv" and n.input[0] == z_tensor)
    weight = next(t for t in graph.initializer if t.name == conv_pre.input[1])
    z_channels = int(weight.dims[1])
    _replace_noise(graph)

    front_inputs = [n for n in ("input", "input_lengths", "scales", "sid") if n in input_names]
    extractor = onnx.utils.Extractor(model)
    front = extractor.extract_model(front_inputs + [NOISE_DP, NOISE_Z], [z_tensor, durations])
    _rename_output(front, z_tensor, Z_OUTPUT)
    _rename_output(front, durations, DURATIONS_OUTPUT)
    decoder_inputs = [z_tensor] + (["sid"] if has_sid else [])
    decoder = extractor.extract_model(decoder_inputs, [graph.output[0].name])
    _rename_input(decoder, z_tensor, Z_OUTPUT)
    return SplitGraph(
        front=front.SerializeToString(),
        decoder=decoder.SerializeToString(),
        has_speaker_input=has_sid,
        z_channels=z_channels,
    )

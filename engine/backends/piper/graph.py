"""Split a Piper (VITS) ONNX graph into an encoder, a windowable flow and a windowable decoder.

A Piper export is one graph: phoneme ids -> text encoder -> stochastic
duration predictor -> prior sample ``z_p`` -> normalising flow -> ``z`` ->
HiFi-GAN decoder -> audio.  The flow and the decoder are convolutional with a
bounded receptive field, so both can run on windows of frames; only the
encoder (cheap, per phoneme) must see the whole segment.  Streaming also needs
the noise as inputs, so a seeded session is reproducible whatever else the
process runs.  This module rewrites the graph in memory, once per voice:

* the two ``RandomNormalLike`` nodes become inputs ``noise_dp`` (duration
  predictor, shape of its template) and ``noise_z`` (prior, sliced in the
  graph from a caller-supplied buffer at least as long as the utterance);
* the encoder returns ``z_p`` (the prior sample that feeds the flow) and the
  ceiled per-phoneme durations;
* the flow maps ``z_p`` to ``z`` (the tensor that feeds ``dec/conv_pre``);
* the decoder maps ``z`` to audio.  Flow and decoder also take the speaker id
  for multi-speaker voices.

The flow's and the decoder's 1-D convolutions are rewritten as 2-D
convolutions of height one (``conv_lift``), and the decoder's upsampling
transposed convolutions as convolutions with an interleave (``polyphase``),
which onnxruntime runs with faster kernels for the same result.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper
from streamvox.engine.backends.piper.conv_lift import lift_convolutions
from streamvox.engine.backends.piper.polyphase import split_transposed_convolutions

NOISE_DP = "noise_dp"
NOISE_Z = "noise_z"
Z_PRIOR = "z_p"
Z_MASK = "z_mask"
Z_OUTPUT = "z"
DURATIONS_OUTPUT = "durations"


class GraphSplitError(ValueError):
    """The ONNX file does not have the structure of a Piper VITS export."""


@dataclass(frozen=True)
class SplitGraph:
    """Serialized encoder, flow and decoder models plus what the caller must feed them."""

    encoder: bytes
    flow: bytes
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


def _find_prior(graph: onnx.GraphProto, noise_tensor: str) -> str:
    """``z_p = m_p + noise * exp(logs_p) * noise_scale``: the first Add downstream of the prior noise."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    frontier = [noise_tensor]
    for _ in range(4):
        nxt = []
        for tensor in frontier:
            for node in consumers.get(tensor, []):
                if node.op_type == "Add":
                    return node.output[0]
                if node.op_type == "Mul":
                    nxt.append(node.output[0])
        frontier = nxt
    raise GraphSplitError("could not find the prior sample z_p downstream of the prior noise")


def _find_mask(graph: onnx.GraphProto, z_tensor: str) -> str:
    """``z = flow(z_p) * y_mask``: the mask is the other input of the Mul producing ``z``."""
    node = _producer_of(graph, z_tensor)
    if node is None or node.op_type != "Mul":
        raise GraphSplitError("z is not produced by a masking Mul")
    return node.input[1]


def _find_durations(graph: onnx.GraphProto) -> str:
    ceils = [n for n in graph.node if n.op_type == "Ceil"]
    if len(ceils) != 1:
        raise GraphSplitError(f"expected one Ceil node (durations), found {len(ceils)}")
    return ceils[0].output[0]


def _noise_nodes(graph: onnx.GraphProto) -> tuple[onnx.NodeProto, onnx.NodeProto]:
    """The two ``RandomNormalLike`` nodes: the duration predictor's noise and the prior's."""
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if len(randoms) != 2:
        raise GraphSplitError(f"expected two RandomNormalLike nodes, found {len(randoms)}")
    dp_nodes = [n for n in randoms if n.name.startswith("/dp/")]
    z_nodes = [n for n in randoms if not n.name.startswith("/dp/")]
    if len(dp_nodes) != 1 or len(z_nodes) != 1:
        raise GraphSplitError("could not tell the duration-predictor noise from the prior noise")
    return dp_nodes[0], z_nodes[0]


def _replace_noise(graph: onnx.GraphProto) -> str:
    """Turn both noise sources into inputs; return the tensor that now carries the prior noise."""
    dp_node, z_node = _noise_nodes(graph)
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
    return z_node.output[0]


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
    """Rewrite a Piper ONNX export into a seeded encoder, a flow and a decoder (see module docstring)."""
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    input_names = [i.name for i in graph.input]
    if "input" not in input_names or "scales" not in input_names:
        raise GraphSplitError(f"unexpected inputs {input_names}: not a Piper VITS graph")
    has_sid = "sid" in input_names
    z_tensor = _find_z_tensor(graph)
    durations = _find_durations(graph)
    mask = _find_mask(graph, z_tensor)
    conv_pre = next(n for n in graph.node if n.op_type == "Conv" and n.input[0] == z_tensor)
    weight = next(t for t in graph.initializer if t.name == conv_pre.input[1])
    z_channels = int(weight.dims[1])
    prior_noise = _replace_noise(graph)
    prior = _find_prior(graph, prior_noise)

    sid = ["sid"] if has_sid else []
    encoder_inputs = [n for n in ("input", "input_lengths", "scales") if n in input_names] + sid
    extractor = onnx.utils.Extractor(model)
    encoder = extractor.extract_model(encoder_inputs + [NOISE_DP, NOISE_Z], [prior, durations])
    _rename_output(encoder, prior, Z_PRIOR)
    _rename_output(encoder, durations, DURATIONS_OUTPUT)
    flow = extractor.extract_model([prior, mask] + sid, [z_tensor])
    _rename_input(flow, prior, Z_PRIOR)
    _rename_input(flow, mask, Z_MASK)
    _rename_output(flow, z_tensor, Z_OUTPUT)
    lift_convolutions(flow, Z_PRIOR)
    decoder = extractor.extract_model([z_tensor] + sid, [graph.output[0].name])
    _rename_input(decoder, z_tensor, Z_OUTPUT)
    lift_convolutions(decoder, Z_OUTPUT)
    split_transposed_convolutions(decoder)
    return SplitGraph(
        encoder=encoder.SerializeToString(),
        flow=flow.SerializeToString(),
        decoder=decoder.SerializeToString(),
        has_speaker_input=has_sid,
        z_channels=z_channels,
    )


def lift_piper_graph(model_bytes: bytes) -> bytes:
    """The whole Piper graph, unsplit, with its flow and decoder lifted as the split ones are:
    what the model alone costs when run the way the server runs it (a floor for benchmarks,
    beside the unmodified graph)."""
    model = onnx.load_from_string(model_bytes)
    _, prior_noise = _noise_nodes(model.graph)
    # The flow's output feeds the decoder, so lifting from the prior lifts both.
    lift_convolutions(model, _find_prior(model.graph, prior_noise.output[0]))
    split_transposed_convolutions(model)
    return model.SerializeToString()

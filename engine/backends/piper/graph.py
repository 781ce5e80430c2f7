"""Split a Piper (VITS) ONNX graph into an encoder, a windowable flow and a windowable decoder.

A Piper export is one graph: phoneme ids -> text encoder -> stochastic
duration predictor -> prior sample ``z_p`` -> normalising flow -> ``z`` ->
HiFi-GAN decoder -> audio.  The flow and the decoder are convolutional with a
bounded receptive field, so both can run on windows of frames; only the
encoder (cheap, per phoneme) must see the whole segment.  Streaming also needs
the noise as inputs, so a seeded session is reproducible whatever else the
process runs.  This module rewrites the graph in memory, once per voice:

* the duration predictor's ``RandomNormalLike`` becomes an input
  ``noise_dp`` (the shape of its template);
* the encoder stops before the prior's sample ``z_p = m_p + noise * exp(logs_p)
  * noise_scale``: it returns the mean, the noise's factors (in the order the
  graph multiplies them) and the ceiled per-phoneme durations, and the caller
  draws the noise for exactly the frames the durations give and does the same
  arithmetic (:func:`prior_sample`), where a noise input would have to be
  sized before the durations are known;
* the flow maps ``z_p`` to ``z`` (the tensor that feeds ``dec/conv_pre``);
* the decoder maps ``z`` to audio.  Flow and decoder also take the speaker id
  for multi-speaker voices.

The 1-D convolutions are rewritten as 2-D convolutions of height one
(``conv_lift``: the flow's and the decoder's as regions, the encoder's one by
one), and the decoder's upsampling transposed convolutions as convolutions
with an interleave (``polyphase``),
which onnxruntime runs with faster kernels for the same result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper
from streamvox.engine.backends.piper.conv_lift import lift_convolutions, lift_each_convolution
from streamvox.engine.backends.piper.polyphase import split_transposed_convolutions

NOISE_DP = "noise_dp"
PRIOR_MEAN = "prior_mean"
PRIOR_FACTOR = "prior_factor_{}"
"""The encoder's outputs ``prior_factor_0``, ``prior_factor_1``, ...: what the prior's noise is
multiplied by, in order."""
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
    prior_factors: int
    """How many ``PRIOR_FACTOR`` outputs the encoder has."""


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


def _prior_chain(graph: onnx.GraphProto, noise_tensor: str) -> tuple[list[str], str, str]:
    """``z_p = m_p + noise * exp(logs_p) * noise_scale`` downstream of the prior noise: the Muls'
    other operands in the order they apply, the Add's other operand (the mean) and ``z_p``."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    factors: list[str] = []
    tensor = noise_tensor
    for _ in range(4):
        readers = consumers.get(tensor, [])
        if len(readers) != 1 or readers[0].op_type not in ("Mul", "Add") or len(readers[0].input) != 2:
            break
        node = readers[0]
        other = node.input[1] if node.input[0] == tensor else node.input[0]
        if node.op_type == "Add":
            return factors, other, node.output[0]
        factors.append(other)
        tensor = node.output[0]
    raise GraphSplitError("could not find the prior sample z_p downstream of the prior noise")


def _find_prior(graph: onnx.GraphProto, noise_tensor: str) -> str:
    """The prior sample ``z_p`` (see :func:`_prior_chain`)."""
    return _prior_chain(graph, noise_tensor)[2]


def prior_sample(mean: np.ndarray, factors: Sequence[np.ndarray], noise: np.ndarray) -> np.ndarray:
    """``z_p`` from the encoder's outputs and ``noise`` of the mean's shape, with the graph's
    float32 operations in the graph's order (so the same values); ``noise`` is overwritten."""
    for factor in factors:
        np.multiply(noise, factor, out=noise)
    return np.add(mean, noise, out=noise)


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


def _replace_duration_noise(graph: onnx.GraphProto) -> str:
    """Turn the duration predictor's noise into an input; return the tensor carrying the prior's
    noise (left in the graph: the split encoder stops before it)."""
    dp_node, z_node = _noise_nodes(graph)
    nodes = []
    for node in graph.node:
        if node is dp_node:
            node = helper.make_node("Identity", [NOISE_DP], [dp_node.output[0]], name="/noise_dp_in")
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.append(helper.make_tensor_value_info(NOISE_DP, TensorProto.FLOAT, ["batch", 2, "phonemes"]))
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
    prior_noise = _replace_duration_noise(graph)
    factors, mean, prior = _prior_chain(graph, prior_noise)

    sid = ["sid"] if has_sid else []
    encoder_inputs = [n for n in ("input", "input_lengths", "scales") if n in input_names] + sid
    extractor = onnx.utils.Extractor(model)
    encoder = extractor.extract_model(encoder_inputs + [NOISE_DP], [mean, *factors, durations])
    _rename_output(encoder, mean, PRIOR_MEAN)
    for index, factor in enumerate(factors):
        _rename_output(encoder, factor, PRIOR_FACTOR.format(index))
    _rename_output(encoder, durations, DURATIONS_OUTPUT)
    lift_each_convolution(encoder)
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
        prior_factors=len(factors),
    )


def lift_piper_graph(model_bytes: bytes) -> bytes:
    """The whole Piper graph, unsplit, with its convolutions lifted as the split ones are:
    what the model alone costs when run the way the server runs it (a floor for benchmarks,
    beside the unmodified graph)."""
    model = onnx.load_from_string(model_bytes)
    _, prior_noise = _noise_nodes(model.graph)
    # The flow's output feeds the decoder, so lifting from the prior lifts both.
    lift_convolutions(model, _find_prior(model.graph, prior_noise.output[0]))
    lift_each_convolution(model)  # the encoder's, as the split encoder's are
    split_transposed_convolutions(model)
    return model.SerializeToString()

"""The streaming decoder (``stream_graph``, ``stream_decoder``): call after call, its samples are
the one-shot decode's, on the bundled voice and on small graphs built to exercise each rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from streamvox.engine.backends.piper.conv_lift import lift_convolutions
from streamvox.engine.backends.piper.polyphase import split_transposed_convolutions
from streamvox.engine.backends.piper.stream_decoder import DecoderStream, StreamingDecoder
from streamvox.engine.backends.piper.stream_graph import NotStreamable, streaming_decoder
from streamvox.engine.backends.piper.voice import PiperVoice, _session_options

from tests.helpers.audio import snr_db

TEXT = "Here is a short summary of the meeting: the budget was approved, and the launch moves to March."


@pytest.fixture(scope="module")
def latent(voice: PiperVoice) -> np.ndarray:
    front = voice.front(voice.text_to_ids(TEXT), np.random.default_rng(1))
    return voice.flow(front.z_p)


def stream_in_chunks(stream: DecoderStream, z: np.ndarray, sizes: list[int], urgent: bool = False) -> np.ndarray:
    pieces, at = [], 0
    for size in sizes:
        end = min(z.shape[1], at + size)
        pieces.append(stream.feed(z[:, at:end], final=end == z.shape[1], urgent=urgent))
        at = end
        if end == z.shape[1]:
            break
    assert stream.finished
    return np.concatenate(pieces)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_chunking_gives_the_one_shot_decode(voice: PiperVoice, latent: np.ndarray, seed: int) -> None:
    assert voice.streaming is not None
    one_shot = voice.decode(latent, urgent=False)
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(1, 48)) for _ in range(latent.shape[1])]
    streamed = stream_in_chunks(voice.streaming.stream(), latent, sizes, urgent=bool(seed % 2))
    assert streamed.shape == one_shot.shape
    assert snr_db(one_shot, streamed) > 100


def test_one_final_call_is_the_one_shot_decode(voice: PiperVoice, latent: np.ndarray) -> None:
    assert voice.streaming is not None
    streamed = voice.streaming.stream().feed(latent, final=True)
    assert snr_db(voice.decode(latent), streamed) > 100


def test_a_call_returns_every_sample_its_frames_complete(voice: PiperVoice, latent: np.ndarray) -> None:
    """Each non-final call stops ``lag`` samples short of its frames; a first call shorter than the
    warm-up returns nothing and is decoded with the next."""
    decoder = voice.streaming
    assert decoder is not None
    graph = decoder.graph
    assert graph.rate == 256 and 0 < graph.lag < 16 * graph.rate
    stream = decoder.stream()
    held = stream.feed(latent[:, : graph.warmup_frames - 1])
    assert held.shape == (0,) and stream.samples == 0
    returned, at = held.shape[0], graph.warmup_frames - 1
    while at + 17 <= 200:
        returned += stream.feed(latent[:, at : at + 17]).shape[0]
        at += 17
        assert returned == stream.available_through() == at * graph.rate - graph.lag
    last = stream.feed(latent[:, at:], final=True)
    assert last.shape[0] == (latent.shape[1] - at) * graph.rate + graph.lag
    assert returned + last.shape[0] == latent.shape[1] * graph.rate
    with pytest.raises(ValueError):
        stream.feed(latent[:, :1])


def test_the_lookahead_covers_the_lag(voice: PiperVoice) -> None:
    decoder = voice.streaming
    assert decoder is not None
    assert decoder.lookahead_frames * decoder.graph.rate >= decoder.graph.lag
    assert (decoder.lookahead_frames - 1) * decoder.graph.rate < decoder.graph.lag


# Small graphs: each streaming rule on a decoder shape of its own.


def _conv(
    name: str, x: str, out: str, c_in: int, c_out: int, k: int, d: int, rng: np.random.Generator
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A padded (same-length) 1-D convolution with random weights."""
    scale = 1 / np.sqrt(c_in * k)
    weight = numpy_helper.from_array((rng.standard_normal((c_out, c_in, k)) * scale).astype(np.float32), f"{name}.w")
    bias = numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32) * 0.1, f"{name}.b")
    pad = d * (k - 1) // 2
    inputs = [x, weight.name, bias.name]
    node = helper.make_node("Conv", inputs, [out], kernel_shape=[k], dilations=[d], pads=[pad, pad])
    return node, [weight, bias]


def _toy_decoder(rng: np.random.Generator, stride: int = 4, condition: bool = False) -> bytes:
    """z (4 channels) -> conv -> leaky -> transposed conv (upsampling) -> two residual branches of
    different dilations summed -> conv -> tanh; ``condition`` adds a constant per channel (as a
    speaker embedding would)."""
    nodes, weights = [], []

    def conv(*args: object) -> None:
        node, ws = _conv(*args, rng)  # type: ignore[arg-type]
        nodes.append(node)
        weights.extend(ws)

    conv("pre", "z", "a", 4, 8, 5, 1)
    weights.append(numpy_helper.from_array((rng.standard_normal((8, 6, 2 * stride)) / 8).astype(np.float32), "up.w"))
    nodes += [
        helper.make_node("LeakyRelu", ["a"], ["a_act"], alpha=0.1),
        helper.make_node(
            "ConvTranspose",
            ["a_act", "up.w"],
            ["u"],
            kernel_shape=[2 * stride],
            strides=[stride],
            pads=[stride // 2, stride // 2],
        ),
    ]
    if condition:
        weights.append(numpy_helper.from_array(rng.standard_normal((1, 6, 1)).astype(np.float32), "g"))
        nodes.append(helper.make_node("Add", ["u", "g"], ["u_cond"]))
    else:
        nodes.append(helper.make_node("Identity", ["u"], ["u_cond"]))
    nodes.append(helper.make_node("LeakyRelu", ["u_cond"], ["u_act"], alpha=0.1))
    conv("r1", "u_act", "r1", 6, 6, 3, 1)
    conv("r2", "u_act", "r2", 6, 6, 5, 3)
    nodes += [
        helper.make_node("Add", ["r1", "u_cond"], ["b1"]),
        helper.make_node("Add", ["r2", "u_cond"], ["b2"]),
        helper.make_node("Add", ["b1", "b2"], ["b"]),
    ]
    conv("post", "b", "p", 6, 1, 7, 1)
    nodes.append(helper.make_node("Tanh", ["p"], ["output"]))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, "t"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    lift_convolutions(model, "z")
    assert split_transposed_convolutions(model) == 1
    return model.SerializeToString()


@pytest.mark.parametrize("block_from_rate", [None, 1, 2])
@pytest.mark.parametrize("stride,condition", [(4, False), (8, True), (2, False)])
def test_a_small_decoder_streams_exactly(stride: int, condition: bool, block_from_rate: int | None) -> None:
    """Carried convolution by convolution (``None``), in blocks from the start (1), or in blocks
    after the upsampling (2)."""
    rng = np.random.default_rng(stride)
    model = _toy_decoder(rng, stride, condition)
    graph = streaming_decoder(model, "z", block_from_rate)
    assert graph.rate == stride
    options = _session_options(1)
    decoder = StreamingDecoder(graph, "z", options, options, has_speaker_input=False)
    one_shot_session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    z = rng.standard_normal((4, 60)).astype(np.float32)
    one_shot = one_shot_session.run(None, {"z": z[np.newaxis]})[0].reshape(-1)
    assert one_shot.shape == (60 * stride,)
    for sizes in ([60], [graph.warmup_frames, 1, 2, 3, 100], [1] * 60, [25, 35]):
        streamed = stream_in_chunks(decoder.stream(), z, sizes)
        assert snr_db(one_shot, streamed) > 100, sizes


def _one_node_decoder(node: onnx.NodeProto, initializer: onnx.TensorProto) -> bytes:
    """A decoder graph of ``node`` alone, from ``z`` (4 channels) to ``output``."""
    graph = helper.make_graph(
        [node],
        node.op_type,
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, "t"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
        [initializer],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]).SerializeToString()


def test_a_time_operator_it_cannot_carry_is_refused() -> None:
    """A cumulative sum over time depends on every earlier sample: no bounded state carries it."""
    axis = numpy_helper.from_array(np.array(2, dtype=np.int64), "axis")
    model = _one_node_decoder(helper.make_node("CumSum", ["z", "axis"], ["output"]), axis)
    with pytest.raises(NotStreamable, match="CumSum"):
        streaming_decoder(model, "z")


def test_a_strided_convolution_is_refused() -> None:
    weight = numpy_helper.from_array(np.ones((4, 4, 3), dtype=np.float32), "w")
    conv = helper.make_node("Conv", ["z", "w"], ["output"], kernel_shape=[3], strides=[2], pads=[1, 1])
    with pytest.raises(NotStreamable, match="strides"):
        streaming_decoder(_one_node_decoder(conv, weight), "z")


def test_the_windowed_voice_has_no_streaming_decoder(windowed_voice: PiperVoice) -> None:
    assert windowed_voice.streaming is None


def test_a_trimmed_voice_still_streams_exactly(voice: PiperVoice, latent: np.ndarray) -> None:
    """``trim_memory`` runs every streaming session once with arena shrinkage; streams after it
    decode as before."""
    assert voice.streaming is not None
    voice.trim_memory()
    streamed = stream_in_chunks(voice.streaming.stream(), latent, [30, 30, 500])
    assert snr_db(voice.decode(latent), streamed) > 100

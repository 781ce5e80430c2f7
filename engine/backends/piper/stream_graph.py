"""Rewrite a Piper decoder graph to decode a stream of latent frames call by call, exactly.

The windowed decode (``voice.decode_window``) runs every window with ``context_frames`` of
``z`` either side and throws their audio away: a 64-frame window decodes 84 frames, a stream's
24-frame first window 44.  Here each call decodes only the frames it is given.  Every
convolution keeps the last ``dilation * (kernel - 1)`` samples of its input as state and runs
with no padding on the concatenation of that state and its new input, so its output lags its
input by the right padding it no longer has; where two branches of different lags meet (a
residual ``Add``), the earlier one goes through a delay line of the difference.  A stream's
first call starts each convolution's state at its left padding (zeros), and the last call
(the ``final`` graph) pads the right as the one-shot graph does, so the samples of a whole
stream, call after call, equal the one-shot decode's to float rounding.

Carried convolution by convolution, every convolution's input is a fresh ``Concat``, which
breaks onnxruntime's blocked-layout (NCHWc) chain: each gets a reorder in and out (on the
bundled voice, 12 % above the one-shot decode per frame).  So past ``block_from_rate`` samples
per frame the graph runs in blocks (overlap-save): a block's input is joined once after its
last ``history`` samples, the convolutions inside keep their zero padding and their layout,
and the block's output is cut where that padding no longer reaches (``history`` is the sum of
its left and right reach).  A block costs its reach again per call, small at a high rate
(the bundled voice's last stage reaches 48 of 256 samples per frame).

Handled, on tensors whose last axis is time: convolutions with stride 1 (any dilation, group,
padding), the polyphase upsampling's reshape-transpose-reshape interleave and its cropping
``Slice``, elementwise operators (with constants, speaker conditioning, or another stream),
and ``Squeeze``/``Unsqueeze`` that keep time last.  Anything else raises
:class:`NotStreamable` and the voice keeps the windowed decode.

Graph interface: the one-shot decoder's inputs plus ``first`` (int64 ``[1]``: 1 on a stream's
first call) and one input per state, ``state/<i>``; its output plus ``state/<i>/next``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from streamvox.engine.backends.piper.conv_lift import drop_unread_initializers

FIRST_INPUT = "first"
_INT_MAX = int(np.iinfo(np.int64).max)
_UNARY = frozenset({"LeakyRelu", "Relu", "Tanh", "Sigmoid", "Neg", "Exp", "Clip", "Identity", "Abs", "Softplus", "Elu"})
_BINARY = frozenset({"Add", "Sub", "Mul", "Div"})


class NotStreamable(ValueError):
    """The decoder graph holds an operator this rewrite cannot carry across calls."""


@dataclass(frozen=True)
class StateSpec:
    """One carried tensor: its input and output names, its shape without the time axis, and how
    many zero samples it holds before a stream's first call."""

    name: str
    dims: tuple[int, ...]
    initial: int

    @property
    def next_name(self) -> str:
        return f"{self.name}/next"

    def start(self) -> np.ndarray:
        return np.zeros((*self.dims, self.initial), dtype=np.float32)


@dataclass(frozen=True)
class StreamingGraph:
    """The two graphs of a streaming decoder and what a caller must know to drive them."""

    step: bytes
    """For every call but a stream's last."""
    final: bytes
    """For a stream's last call: pads the end as the one-shot graph does."""
    states: tuple[StateSpec, ...]
    rate: int
    """Output samples per latent frame."""
    lag: int
    """After a non-final call, the output stops this many samples short of the frames fed."""
    warmup_frames: int
    """A stream's first non-final call needs at least this many frames (else some convolution
    would have nothing to output)."""


@dataclass(frozen=True)
class _Stream:
    """A time tensor: samples per latent frame, lag (samples), and its shape without time."""

    rate: int
    lag: int
    dims: tuple[int, ...]


@dataclass(frozen=True)
class _Split:
    """A phase tensor inside the polyphase interleave: ``[1, C, s, T]`` or, transposed, ``[1, C, T, s]``."""

    source: _Stream
    channels: int
    phases: int
    transposed: bool


@dataclass(frozen=True)
class _TimeConv:
    """A convolution along time alone: its weights, and its padding and reach in samples."""

    weight: np.ndarray
    left: int
    right: int
    span: int
    """``dilation * (kernel - 1)``: the input samples one output sample reads, less one."""

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])


@dataclass(eq=False)
class _Block:
    """An overlap-save region: its input joined after the input's last ``history`` samples; every
    tensor inside covers the joined range, and convolutions keep their zero padding."""

    source: _Stream
    joined: str
    state: StateSpec
    history: int = 0


@dataclass(frozen=True)
class _Blocked:
    """A tensor inside a block, and how far zero padding at the joined range's edges reaches in."""

    block: _Block
    left: int
    right: int
    dims: tuple[int, ...]


class _Rewriter:
    """One pass over the one-shot decoder in topological order; builds both graphs at once."""

    def __init__(self, model: onnx.ModelProto, z_input: str, block_from_rate: int | None) -> None:
        self.model = model
        self.block_from_rate = block_from_rate
        self.blocked: dict[str, _Blocked] = {}
        self.blocks: list[_Block] = []
        self.opened: dict[str, str] = {}
        """Stream tensor -> the joined input of the block it opened."""
        self.closed: dict[str, str] = {}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        z = next((i for i in self.graph.input if i.name == z_input), None)
        if z is None:
            raise NotStreamable(f"the decoder has no input {z_input!r}")
        channels = self._z_channels(z_input)
        self.streams: dict[str, _Stream] = {z_input: _Stream(rate=1, lag=0, dims=(1, channels))}
        self.splits: dict[str, _Split] = {}
        self.step: list[onnx.NodeProto] = []
        self.final: list[onnx.NodeProto] = []
        self.states: list[StateSpec] = []
        self.new_constants: list[onnx.TensorProto] = []
        self.ints: dict[int, str] = {}
        self.serial = 0

    def _z_channels(self, z_input: str) -> int:
        """From the input's declared shape, else from the first convolution's weights."""
        z = next(i for i in self.graph.input if i.name == z_input)
        dims = z.type.tensor_type.shape.dim
        if len(dims) == 3 and dims[1].HasField("dim_value"):
            return int(dims[1].dim_value)
        first = next((node for node in self.graph.node if node.op_type == "Conv"), None)
        weight = None if first is None else self.constants.get(first.input[1])
        if first is not None and weight is not None:
            return int(weight.shape[1]) * int(_attributes(first).get("group", 1))
        raise NotStreamable("cannot tell the latent channel count")

    def _name(self, what: str) -> str:
        self.serial += 1
        return f"stream/{self.serial}/{what}"

    def _int(self, value: int) -> str:
        """A one-element int64 initializer holding ``value`` (one per value, shared)."""
        if value not in self.ints:
            name = self._name("int")
            self.new_constants.append(numpy_helper.from_array(np.array([value], dtype=np.int64), name))
            self.ints[value] = name
        return self.ints[value]

    def _time_slice(self, data: str, start: int | str, end: int | str, output: str, name: str = "") -> onnx.NodeProto:
        """``Slice`` along the time (last) axis; ``start`` and ``end``: a number, or a tensor
        holding one."""
        bounds = [bound if isinstance(bound, str) else self._int(bound) for bound in (start, end)]
        return helper.make_node("Slice", [data, *bounds, self._int(-1)], [output], name=name or None)

    def _both(self, node: onnx.NodeProto) -> None:
        self.step.append(node)
        self.final.append(node)

    def _state(self, dims: tuple[int, ...], initial: int) -> StateSpec:
        spec = StateSpec(f"state/{len(self.states)}", dims, initial)
        self.states.append(spec)
        return spec

    def run(self) -> None:
        for node in self.graph.node:
            timed = [n for n in node.input if n in self.streams or n in self.splits or n in self.blocked]
            if not timed:
                self._both(node)
                continue
            if self._in_block(node):
                continue
            if any(name in self.blocked for name in node.input):
                node = _with_inputs(node, [self._close(n) if n in self.blocked else n for n in node.input])
            if node.op_type == "Conv":
                self._conv(node)
            elif node.op_type in ("Reshape", "Transpose"):
                self._interleave(node)
            elif node.op_type == "Slice":
                self._slice(node)
            elif node.op_type in ("Squeeze", "Unsqueeze"):
                self._squeeze(node)
            elif node.op_type in _UNARY and len(timed) == 1 and node.input[0] in self.streams:
                self._both(node)
                self.streams[node.output[0]] = self.streams[node.input[0]]
            elif node.op_type in _BINARY:
                self._binary(node)
            else:
                raise NotStreamable(f"{node.op_type} ({node.name}) on a time series")

    def _in_block(self, node: onnx.NodeProto) -> bool:
        """Run ``node`` inside a block if it can be: a stride-1 convolution that does not feed a
        polyphase interleave, or an elementwise operator, whose time inputs are in one block
        (or are a stream at ``block_from_rate`` or faster, which opens one)."""
        conv = self._time_conv(node) if node.op_type == "Conv" else None
        if node.op_type == "Conv":
            if self._feeds_interleave(node) or not isinstance(conv, _TimeConv):
                return False
            data = [node.input[0]]
        elif node.op_type in _UNARY or node.op_type in _BINARY:
            data = list(node.input)
        else:
            return False
        timed = [n for n in data if n in self.streams or n in self.blocked]
        if any(n in self.splits for n in node.input) or not timed:
            return False
        blocks = {id(self.blocked[n].block) for n in timed if n in self.blocked}
        blocks |= {id(self.blocked[self.opened[n]].block) for n in timed if n in self.opened}
        fresh = [n for n in timed if n not in self.blocked and n not in self.opened]
        if len(blocks) + len(fresh) != 1:
            return False
        if fresh and (self.block_from_rate is None or self.streams[fresh[0]].rate < self.block_from_rate):
            return False
        for name in fresh:
            self._open(name)
        inputs = [self.opened.get(n, n) for n in node.input]
        members = [self.blocked[n] for n in inputs if n in self.blocked]
        left, right = max(m.left for m in members), max(m.right for m in members)
        dims = members[0].dims
        if isinstance(conv, _TimeConv):
            left, right = left + conv.left, right + conv.right
            dims = (1, conv.out_channels, *dims[2:])
        self._both(_with_inputs(node, inputs))
        self.blocked[node.output[0]] = _Blocked(members[0].block, left, right, dims)
        return True

    def _time_conv(self, node: onnx.NodeProto) -> _TimeConv | str:
        """The convolution's geometry, or why the rewrite cannot carry it."""
        weight = self.constants.get(node.input[1])
        if weight is None:
            return "weights are not constant"
        if any(n in self.streams or n in self.splits or n in self.blocked for n in node.input[1:]):
            return "only its data input may be a time series"
        attributes = _attributes(node)
        spatial = weight.ndim - 2
        kernel = list(attributes.get("kernel_shape", weight.shape[2:]))
        strides = list(attributes.get("strides", [1] * spatial))
        dilations = list(attributes.get("dilations", [1] * spatial))
        pads = list(attributes.get("pads", [0] * (2 * spatial)))
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(s != 1 for s in strides):
            return "strides or auto padding"
        if any(kernel[i] != 1 or pads[i] or pads[spatial + i] for i in range(spatial - 1)):
            return "a kernel along an axis other than time"
        span = int(dilations[-1]) * (int(kernel[-1]) - 1)
        return _TimeConv(weight, int(pads[spatial - 1]), int(pads[-1]), span)

    def _feeds_interleave(self, node: onnx.NodeProto) -> bool:
        return any(
            reader.op_type == "Reshape" and len(self.constants.get(reader.input[1], [])) == 4
            for reader in self.readers.get(node.output[0], [])
        )

    def _open(self, name: str) -> None:
        source = self.streams[name]
        state = self._state(source.dims, 0)
        joined = self._name("block")
        self._both(helper.make_node("Concat", [state.name, name], [joined], axis=-1))
        block = _Block(source, joined, state)
        self.blocks.append(block)
        self.opened[name] = joined
        self.blocked[joined] = _Blocked(block, 0, 0, source.dims)

    def _close(self, name: str) -> str:
        """``name`` cut to the samples its block got right: past the history's share, and in a
        step, short of what padding at the end reached; carried on as a stream."""
        if name in self.closed:
            return self.closed[name]
        member = self.blocked[name]
        block = member.block
        block.history = max(block.history, member.left + member.right)
        history, start = self._name("history"), self._name("start")
        self._both(helper.make_node("Shape", [block.state.name], [history], start=-1))
        shifted = self._name("shifted")
        self._both(helper.make_node("Sub", [history, self._int(member.right)], [shifted]))
        self._both(helper.make_node("Max", [shifted, self._int(0)], [start]))
        out = self._name("closed")
        self.step.append(self._time_slice(name, start, -member.right if member.right else _INT_MAX, out))
        self.final.append(self._time_slice(name, start, _INT_MAX, out))
        source = block.source
        self.streams[out] = _Stream(source.rate, source.lag + member.right, member.dims)
        self.closed[name] = out
        return out

    def finish_blocks(self) -> None:
        """Each block's state: the last ``history`` samples of its joined input."""
        for block in self.blocks:
            keep = -block.history if block.history else _INT_MAX
            self._both(self._time_slice(block.joined, keep, _INT_MAX, block.state.next_name))

    def _conv(self, node: onnx.NodeProto) -> None:
        source = self.streams.get(node.input[0])
        conv = self._time_conv(node)
        if source is None or isinstance(conv, str):
            raise NotStreamable(f"Conv {node.name}: {conv if isinstance(conv, str) else 'its data is not a stream'}")
        out = _Stream(source.rate, source.lag + conv.span - conv.left, (1, conv.out_channels, *source.dims[2:]))
        if conv.span == 0 and conv.left == 0 and conv.right == 0:
            self._both(node)
            self.streams[node.output[0]] = out
            return
        state = self._state(source.dims, conv.left)
        joined = self._name("joined")
        self._both(helper.make_node("Concat", [state.name, node.input[0]], [joined], axis=-1))
        kept = {k: v for k, v in _attributes(node).items() if k != "pads"}
        spatial = conv.weight.ndim - 2
        for nodes, end_pad in ((self.step, 0), (self.final, conv.right)):
            nodes.append(
                helper.make_node(
                    "Conv",
                    [joined, *node.input[1:]],
                    list(node.output),
                    name=node.name,
                    pads=[0] * (2 * spatial - 1) + [end_pad],
                    **kept,
                )
            )
        self._both(self._time_slice(joined, -conv.span, _INT_MAX, state.next_name))
        self.streams[node.output[0]] = out

    def _interleave(self, node: onnx.NodeProto) -> None:
        name = node.input[0]
        if node.op_type == "Transpose":
            split = self.splits.get(name)
            if split is None or split.transposed or list(_attributes(node).get("perm", [])) != [0, 1, 3, 2]:
                raise NotStreamable(f"Transpose {node.name} on a time series")
            self._both(node)
            self.splits[node.output[0]] = _Split(split.source, split.channels, split.phases, transposed=True)
            return
        shape = self.constants.get(node.input[1])
        if shape is None:
            raise NotStreamable(f"Reshape {node.name}: shape is not constant")
        shape = [int(v) for v in shape]
        if name in self.streams:
            source = self.streams[name]
            if len(source.dims) != 3 or len(shape) != 4 or shape[0] != 0 or shape[3] != -1:
                raise NotStreamable(f"Reshape {node.name} of a time series is not a phase split")
            channels, phases = shape[1], shape[2]
            if channels * phases != source.dims[1] or source.dims[2] != 1:
                raise NotStreamable(f"Reshape {node.name} of a time series is not a phase split")
            self._both(node)
            self.splits[node.output[0]] = _Split(source, channels, phases, transposed=False)
            return
        split = self.splits[name]
        if not split.transposed or shape != [0, split.channels, 1, -1]:
            raise NotStreamable(f"Reshape {node.name}: not the end of a polyphase interleave")
        self._both(node)
        source = split.source
        self.streams[node.output[0]] = _Stream(
            source.rate * split.phases, source.lag * split.phases, (1, split.channels, 1)
        )

    def _slice(self, node: onnx.NodeProto) -> None:
        source = self.streams.get(node.input[0])
        values = [self.constants.get(name) for name in node.input[1:]]
        if source is None or len(node.input) < 4 or any(v is None for v in values):
            raise NotStreamable(f"Slice {node.name}: not a constant crop of a time series")
        starts, ends, axes = (np.asarray(v).reshape(-1) for v in values[:3])
        steps = np.asarray(values[3]).reshape(-1) if len(values) > 3 else np.ones(1, dtype=np.int64)
        rank = len(source.dims) + 1
        if len(starts) != 1 or int(axes[0]) % rank != rank - 1 or int(steps[0]) != 1:
            raise NotStreamable(f"Slice {node.name}: not a crop of the time axis alone")
        start, end = int(starts[0]), int(ends[0])
        if start < 0 or 0 <= end < _INT_MAX // 2:
            raise NotStreamable(f"Slice {node.name}: crops at absolute positions")
        first_start = self._name("start")
        self._both(helper.make_node("Mul", [FIRST_INPUT, self._int(start)], [first_start]))
        for nodes, stop in ((self.step, _INT_MAX), (self.final, end)):
            nodes.append(self._time_slice(node.input[0], first_start, stop, node.output[0], node.name))
        self.streams[node.output[0]] = _Stream(source.rate, source.lag + start, source.dims)

    def _squeeze(self, node: onnx.NodeProto) -> None:
        source = self.streams.get(node.input[0])
        axes_value = self.constants.get(node.input[1]) if len(node.input) > 1 else None
        if axes_value is None:
            axes_value = _attributes(node).get("axes")
        if source is None or axes_value is None:
            raise NotStreamable(f"{node.op_type} {node.name}: axes unknown")
        axes = [int(a) for a in np.asarray(axes_value).reshape(-1)]
        dims = list(source.dims)
        if node.op_type == "Unsqueeze":
            rank = len(dims) + 1 + len(axes)
            for axis in sorted(a % rank for a in axes):
                if axis >= rank - 1:
                    raise NotStreamable(f"Unsqueeze {node.name} moves the time axis")
                dims.insert(axis, 1)
        else:
            rank = len(dims) + 1
            for axis in sorted((a % rank for a in axes), reverse=True):
                if axis >= rank - 1 or dims[axis] != 1:
                    raise NotStreamable(f"Squeeze {node.name} moves the time axis")
                del dims[axis]
        self._both(node)
        self.streams[node.output[0]] = _Stream(source.rate, source.lag, tuple(dims))

    def _binary(self, node: onnx.NodeProto) -> None:
        if any(name in self.splits for name in node.input):
            raise NotStreamable(f"{node.op_type} {node.name} inside a polyphase interleave")
        streams = [self.streams[name] for name in node.input if name in self.streams]
        if len(streams) == 1:
            self._both(node)
            self.streams[node.output[0]] = streams[0]
            return
        a, b = streams
        if a.rate != b.rate or a.dims != b.dims:
            raise NotStreamable(f"{node.op_type} {node.name}: two time series of different rates or shapes")
        inputs = list(node.input)
        late = 0 if a.lag > b.lag else 1
        early = 1 - late
        delay = abs(a.lag - b.lag)
        if delay:
            inputs[early] = self._delay(inputs[early], inputs[late], streams[early].dims, delay)
        self._both(helper.make_node(node.op_type, inputs, list(node.output), name=node.name))
        self.streams[node.output[0]] = streams[late]

    def _delay(self, early: str, late: str, dims: tuple[int, ...], delay: int) -> str:
        """``early`` delayed to line up with ``late``: its carried samples, then its new ones,
        cut to ``late``'s length; what is left over is carried to the next call."""
        state = self._state(dims, 0)
        joined, length, delayed = self._name("joined"), self._name("length"), self._name("delayed")
        self._both(helper.make_node("Concat", [state.name, early], [joined], axis=-1))
        self._both(helper.make_node("Shape", [late], [length], start=-1))
        self._both(self._time_slice(joined, 0, length, delayed))
        self._both(self._time_slice(joined, length, _INT_MAX, state.next_name))
        return delayed

    def build(self, nodes: list[onnx.NodeProto]) -> bytes:
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(self.new_constants)
        drop_unread_initializers(graph, {t.name for t in graph.initializer})
        del graph.value_info[:]
        graph.input.append(helper.make_tensor_value_info(FIRST_INPUT, TensorProto.INT64, [1]))
        for spec in self.states:
            shape = [*spec.dims, f"{spec.name}/length"]
            graph.input.append(helper.make_tensor_value_info(spec.name, TensorProto.FLOAT, shape))
            graph.output.append(helper.make_tensor_value_info(spec.next_name, TensorProto.FLOAT, None))
        return model.SerializeToString()


def streaming_decoder(model_bytes: bytes, z_input: str, block_from_rate: int | None = None) -> StreamingGraph:
    """The step and final graphs of ``model_bytes``'s decoder (see the module docstring); raises
    :class:`NotStreamable` when its graph holds something they cannot carry.

    ``block_from_rate``: time series of at least this many samples per frame run in blocks
    (``None``: none do)."""
    model = onnx.load_from_string(model_bytes)
    if any(o.domain in ("", "ai.onnx") and o.version < 15 for o in model.opset_import):
        raise NotStreamable("the decoder's opset is older than 15 (Shape with start)")
    rewriter = _Rewriter(model, z_input, block_from_rate)
    rewriter.run()
    outputs = [o.name for o in model.graph.output]
    for output in outputs:
        if output in rewriter.blocked:
            raise NotStreamable(f"the decoder's output {output} is computed inside a block")
    rewriter.finish_blocks()
    if len(outputs) != 1 or outputs[0] not in rewriter.streams:
        raise NotStreamable(f"the decoder's output {outputs} is not one time series")
    out = rewriter.streams[outputs[0]]
    warmup = max(math.ceil(s.lag / s.rate) for s in rewriter.streams.values()) + 1
    return StreamingGraph(
        step=rewriter.build(rewriter.step),
        final=rewriter.build(rewriter.final),
        states=tuple(rewriter.states),
        rate=out.rate,
        lag=out.lag,
        warmup_frames=warmup,
    )


def _with_inputs(node: onnx.NodeProto, inputs: list[str]) -> onnx.NodeProto:
    if list(node.input) == inputs:
        return node
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.input[:] = inputs
    return copy


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}

"""How close the bundled voice's graphs run to this core's own arithmetic rate, in one process.

    python scripts/piper_flops.py [--rounds 6]

Counts the multiply-adds of every convolution and matrix product of the served encoder, flow
and decoder on the load benchmark's texts (shapes from ONNX shape inference at each text's
length), times each part one-shot on one thread, and measures beside them what onnxruntime's
own single-threaded ``MatMul`` reaches on 1024 x 1024 matrices: the dense-arithmetic rate this
core gives this runtime.  Prints per part GFLOP per audio second, ms of CPU per audio second,
the rate reached and its share of the ``MatMul`` rate; and the floor, what the three parts
would cost at that rate.  A part far below the rate has headroom a faster kernel could take;
one near it has none.  The encoder's frame expansion (sized by the durations, which shape
inference cannot know) is left out of its count: a few kFLOP per frame.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, shape_inference
from streamvox.bench.harness import thread_cpu_s
from streamvox.bench.load import UTTERANCES
from streamvox.engine.backends.piper.backend import bundled_voice_path
from streamvox.engine.backends.piper.graph import NOISE_DP, Z_MASK, Z_OUTPUT, Z_PRIOR, split_piper_graph
from streamvox.engine.backends.piper.voice import HOP_LENGTH, PiperVoice, _session_options

MATMUL_SIZE = 1024


def arithmetic(model_bytes: bytes, shapes: dict[str, Sequence[int]]) -> int:
    """Floating-point operations (a multiply-add counts 2) of the graph's ``Conv``, ``ConvTranspose``
    and ``MatMul`` nodes with its inputs fixed to ``shapes``; nodes whose shapes inference cannot
    tell count 0."""
    model = onnx.load_from_string(model_bytes)
    for value in model.graph.input:
        if value.name in shapes:
            value.type.tensor_type.shape.ClearField("dim")
            for size in shapes[value.name]:
                value.type.tensor_type.shape.dim.add().dim_value = size
    inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    known = {
        info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
        for info in [*inferred.input, *inferred.value_info, *inferred.output]
    }
    known.update({t.name: list(t.dims) for t in model.graph.initializer})
    flops = 0
    for node in model.graph.node:
        out = known.get(node.output[0])
        if not out or not all(out):
            continue
        if node.op_type == "Conv" and node.input[1] in known:
            weight = known[node.input[1]]  # [out, in / group, *kernel]
            flops += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type == "ConvTranspose" and node.input[1] in known:
            weight = known[node.input[1]]  # [in, out / group, *kernel]: each input touches the kernel
            inputs = known.get(node.input[0])
            if inputs and all(inputs):
                flops += 2 * int(np.prod(inputs)) * int(np.prod(weight[1:]))
        elif node.op_type == "MatMul":
            left = known.get(node.input[0])
            if left and all(left):
                flops += 2 * int(np.prod(out)) * left[-1]
    return flops


def matmul_rate(rounds: int) -> float:
    """GFLOP/s of onnxruntime's single-threaded ``MatMul`` on square float32 matrices."""
    n = MATMUL_SIZE
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), _session_options(1), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {name: rng.standard_normal((n, n), dtype=np.float32) for name in "ab"}
    session.run(None, feeds)
    times = [thread_cpu_s(lambda: [session.run(None, feeds) for _ in range(4)]) / 4 for _ in range(rounds)]
    return 2 * n**3 / min(times) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds; the median is kept")
    args = parser.parse_args()

    path = bundled_voice_path()
    voice = PiperVoice.load(path, threads=1)
    split = split_piper_graph(path.read_bytes())
    decoder = ort.InferenceSession(split.decoder, _session_options(1), providers=["CPUExecutionProvider"])
    texts = [voice.text_to_ids(text) for text in UTTERANCES]
    fronts = [voice.front(ids, np.random.default_rng(1)) for ids in texts]
    zs = [voice.flow(front.z_p, urgent=False) for front in fronts]
    audio_s = sum(front.frames * HOP_LENGTH for front in fronts) / voice.sample_rate

    channels = voice.z_channels
    flops = {"encoder": 0, "flow": 0, "decoder": 0}
    for ids, front in zip(texts, fronts, strict=True):
        n, frames = len(ids), front.frames
        flops["encoder"] += arithmetic(split.encoder, {"input": (1, n), "input_lengths": (1,), NOISE_DP: (1, 2, n)})
        flops["flow"] += arithmetic(split.flow, {Z_PRIOR: (1, channels, frames), Z_MASK: (1, 1, frames)})
        flops["decoder"] += arithmetic(split.decoder, {Z_OUTPUT: (1, channels, frames)})

    runs: dict[str, Callable[[], object]] = {
        "encoder": lambda: [voice.front(ids, np.random.default_rng(1)) for ids in texts],
        "flow": lambda: [voice.flow(front.z_p, urgent=False) for front in fronts],
        "decoder": lambda: [decoder.run(None, {Z_OUTPUT: z[np.newaxis]}) for z in zs],
    }
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {part: [] for part in runs}
    rates: list[float] = []
    for _ in range(args.rounds):  # the parts and the reference alternate: drift hits all alike
        for part, run in runs.items():
            times[part].append(thread_cpu_s(run))
        rates.append(matmul_rate(1))
    rate = statistics.median(rates)

    print(f"onnxruntime MatMul {MATMUL_SIZE}x{MATMUL_SIZE}, one thread: {rate:.1f} GFLOP/s")
    print(f"{len(texts)} load texts, {audio_s:.2f} s of audio, one thread, median of {args.rounds} rounds")
    print("  part      GFLOP per audio s   ms CPU per audio s   GFLOP/s   share of MatMul rate")
    total_ms = floor_ms = 0.0
    for part, seconds in times.items():
        cpu_s = statistics.median(seconds)
        gflop = flops[part] / 1e9 / audio_s
        ms = 1000 * cpu_s / audio_s
        reached = flops[part] / 1e9 / cpu_s
        total_ms += ms
        floor_ms += 1000 * gflop / rate
        print(f"  {part:8s}  {gflop:17.3f}   {ms:18.2f}   {reached:7.1f}   {reached / rate:20.2f}")
    slower = total_ms / floor_ms
    print(f"  all three {total_ms:.2f} ms CPU per audio s; at the MatMul rate {floor_ms:.2f} (x{slower:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

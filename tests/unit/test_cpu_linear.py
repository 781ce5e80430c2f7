"""The small-batch int8 linear kernel (engine/ar/cpu_linear.c) against float arithmetic over the same
int8 weights and inputs, quantised here in torch."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import torch
from streamvox.engine.ar import cpu_linear
from streamvox.engine.ar.cpu_linear import Int8Linear


def int8_weights(weight: torch.Tensor) -> torch.Tensor:
    """The weights the kernel multiplies by, dequantised: symmetric int8 per output row."""
    top = weight.abs().amax(dim=1, keepdim=True)
    return torch.round(weight * (torch.tensor(127.0) / top)).clamp(-127, 127) * (top / 127.0)


def u8_inputs(x: torch.Tensor) -> torch.Tensor:
    """The inputs the kernel multiplies, dequantised: per row, u8 over its min and max (0 inside)."""
    low, high = x.amin(dim=1, keepdim=True).clamp(max=0), x.amax(dim=1, keepdim=True).clamp(min=0)
    step = (high - low) / 255.0
    zero = torch.round(-low / step).clamp(0, 255)
    return (torch.round(x * (1.0 / step)) + zero).clamp(0, 255).sub(zero) * step


def case(rows: int, out: int = 128, inputs: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = 0.05 * torch.randn(out, inputs, generator=generator)
    bias = 0.1 * torch.randn(out, generator=generator)
    return weight, bias, torch.randn(rows, inputs, generator=generator)


def test_the_kernel_is_built_and_runs_vnni_where_the_cpu_has_it() -> None:
    assert cpu_linear.available()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expected = all(re.search(rf"\b{flag}\b", flags) for flag in ("avx512f", "avx512bw", "avx512_vnni"))
    assert cpu_linear.fast_path() == expected


@pytest.mark.parametrize("portable", [False, True])
# every tile size and its tails, and a prefill's rows (quantised on every thread from 32 rows)
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 7, 16, 19, 33, 210])
def test_matches_float_arithmetic_over_the_quantised_operands(portable: bool, rows: int) -> None:
    weight, bias, x = case(rows, seed=rows)
    got = Int8Linear(weight, bias, portable=portable)(x)
    want = u8_inputs(x) @ int8_weights(weight).T + bias
    # the integer sums are exact; what differs is float rounding of the scales
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # and the whole is an int8 product: within 2 % of the float one on these sizes
    exact = x @ weight.T + bias
    assert float((got - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_relu_and_no_bias() -> None:
    weight, _, x = case(4, seed=1)
    got = Int8Linear(weight, None)(x, relu=True)
    torch.testing.assert_close(got, torch.relu(u8_inputs(x) @ int8_weights(weight).T), rtol=1e-5, atol=1e-5)
    assert bool((got >= 0).all())


def test_fast_and_portable_paths_agree() -> None:
    if not cpu_linear.fast_path():
        pytest.skip("no AVX-512 VNNI on this CPU: only the portable path runs")
    weight, bias, x = case(9, out=192, inputs=512, seed=2)
    fast, portable = Int8Linear(weight, bias), Int8Linear(weight, bias, portable=True)
    torch.testing.assert_close(fast(x), portable(x), rtol=1e-6, atol=1e-6)


def test_a_row_does_not_depend_on_the_rest_of_its_batch() -> None:
    """Each row's input is quantised over its own range: a stream's output is the same alone or
    batched with others (fbgemm's single range for the call could not say so)."""
    weight, bias, x = case(6, seed=3)
    x[5] *= 50  # a row with a far wider range
    linear = Int8Linear(weight, bias)
    together = linear(x)
    for row in range(6):
        assert torch.equal(linear(x[row : row + 1])[0], together[row])


def test_constant_and_non_finite_rows() -> None:
    weight, bias, x = case(3, seed=4)
    x[0] = 0.0
    x[1, 7] = float("nan")
    got = Int8Linear(weight, bias)(x)
    assert torch.equal(got[0], bias) and torch.equal(got[1], bias)  # nothing finite stands for a NaN row
    torch.testing.assert_close(got[2:], u8_inputs(x[2:]) @ int8_weights(weight).T + bias, rtol=1e-5, atol=1e-5)


def test_thread_count_does_not_change_the_result_and_calls_may_overlap() -> None:
    weight, bias, x = case(40, out=256, inputs=128, seed=5)  # 40 rows: quantised on every thread at 2
    linear = Int8Linear(weight, bias)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = linear(x)
        torch.set_num_threads(2)
        two = linear(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    results: list[torch.Tensor | None] = [None, None]

    def work(i: int) -> None:
        for _ in range(50):
            results[i] = linear(x)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(r is not None and torch.equal(r, one) for r in results)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="out % 64"):
        Int8Linear(torch.zeros(100, 64), None)
    with pytest.raises(ValueError, match="out % 64"):
        Int8Linear(torch.zeros(64, 20), None)
    with pytest.raises(ValueError, match="bias"):
        Int8Linear(torch.zeros(64, 32), torch.zeros(63))
    linear = Int8Linear(torch.ones(64, 32), None)
    with pytest.raises(ValueError, match="x must be"):
        linear(torch.zeros(2, 31))
    with pytest.raises(ValueError, match="x must be"):
        linear(torch.zeros(2, 32, dtype=torch.float64))
    assert not cpu_linear.fits(torch.zeros(1025, 512)) and cpu_linear.fits(torch.zeros(1536, 512))

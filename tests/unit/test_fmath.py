"""The kernels' own float32 functions: accurate against float64 numpy, and compiled without
fused multiply-adds even on a CPU that has them (an FMA rounds once where the documented
sequence rounds twice, so it would change bits between CPUs)."""

import math
import re

import numpy as np
import pytest
from numba import njit

from service.core import fmath, kernels
from service.core.products import accumulate

WIDE = np.concatenate(
    [np.linspace(-90, 90, 200_001), np.random.default_rng(0).normal(0, 4, 200_000)]
).astype(np.float32)
REFERENCES = {
    "exp": (np.exp, WIDE),
    "expm1": (np.expm1, WIDE),
    "tanh": (np.tanh, WIDE),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), WIDE),
    "softplus": (lambda x: np.logaddexp(0, x), WIDE),
    "erf": (np.vectorize(math.erf), WIDE),
    "log1p": (np.log1p, np.geomspace(1e-20, 1e6, 100_001).astype(np.float32)),
}


def _elementwise(fn):
    @njit(error_model="numpy")
    def apply(x, out):
        for i in range(x.shape[0]):
            out[i] = fn(x[i])

    return apply


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_within_a_few_float32_ulps_of_float64(name):
    reference, x = REFERENCES[name]
    out = np.empty_like(x)
    _elementwise(getattr(fmath, name))(x, out)
    with np.errstate(over="ignore"):
        expected = reference(x.astype(np.float64))
    finite = np.abs(expected) < np.finfo(np.float32).max
    assert np.array_equal(np.isinf(out), ~finite)
    ulp = np.spacing(np.abs(expected[finite]).astype(np.float32)).astype(np.float64)
    tiny = np.abs(expected[finite]) < 1e-30  # subnormal results: absolute error only
    errors = np.abs(out[finite] - expected[finite]) / np.where(tiny, 1.0, ulp)
    assert errors[~tiny].max() <= 4.0
    assert np.abs(out[finite][tiny] - expected[finite][tiny]).max(initial=0) < 1e-37


def test_compiled_kernels_fuse_no_multiply_with_an_add():
    @njit(error_model="numpy")
    def step(z, x, w):
        accumulate(z[:1], x[:1], w)  # one row: sums held in registers
        accumulate(z, x, w)  # several rows
        accumulate(z[:, ::2], x, w[:, ::2])  # strided: numba loops
        for j in range(z.shape[1]):
            z[0, j] = fmath.tanh(z[0, j]) * fmath.sigmoid(z[0, j]) + fmath.erf(z[0, j])

    z, x = np.zeros((5, 256), np.float32), np.ones((5, 64), np.float32)
    step(z, x, np.ones((64, 256), np.float32))
    assembly = "".join(step.inspect_asm().values())
    assert re.search(r"\bv?mulps\b|\bv?mulss\b", assembly)  # the products are there...
    assert not re.search(r"\bvfn?m(add|sub)\w*", assembly)  # ...and never fused


def test_lstm_kernel_fuses_no_multiply_with_an_add():
    """The default cell's c = f * c + i * g and h = o * tanh(c), computed in the same loops
    as the gates' activations: still two roundings each."""

    @njit(error_model="numpy")
    def layer(x, state, kernel, recurrent_kernel, bias):
        return kernels.lstm(
            x, state, kernel, recurrent_kernel, bias, kernels.TANH, kernels.SIGMOID, True
        )

    f = np.float32
    layer(
        np.ones((3, 2, 4), f),
        np.ones((3, 10), f),
        np.ones((4, 20), f),
        np.ones((5, 20), f),
        np.ones(20, f),
    )
    assembly = "".join(layer.inspect_asm().values())
    assert re.search(r"\bv?divps\b", assembly)  # the vectorised cell is there...
    assert not re.search(r"\bvfn?m(add|sub)\w*", assembly)  # ...and fuses nothing

"""The kernels' products against the documented order, computed by numpy one input at a
time: z[s, j] + x[s, 0] * w[0, j], then + x[s, 1] * w[1, j], ... each product and each sum
rounded to float32 on its own (numpy's elementwise float32 multiply and add are single
IEEE operations)."""

import numpy as np
import pytest

from service.core.products import accumulate, sum_from

F = np.float32


def in_documented_order(z: np.ndarray, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = z.copy()
    for i in range(x.shape[1]):
        z = z + x[:, i : i + 1] * w[i]
    return z


# Rows: one (sums in registers), groups of rows and a partial group; outputs: whole
# register blocks, leftover vectors of every size and a masked last vector.
SHAPES = [
    (1, 64, 256),
    (1, 80, 512),
    (1, 16, 192),
    (1, 5, 7),
    (1, 33, 16 * 15 + 3),
    (4, 64, 256),
    (9, 64, 256),
    (7, 3, 100),
    (16, 64, 33),
    (2, 1, 1),
    (3, 0, 17),
    (0, 4, 8),
]


@pytest.mark.parametrize(("rows", "inputs", "outputs"), SHAPES)
def test_every_sum_takes_its_terms_in_input_order(rows, inputs, outputs):
    rng = np.random.default_rng(rows * 1000 + outputs)
    z = rng.normal(size=(rows, outputs)).astype(F)
    # Wide magnitudes: any reordering or fused multiply-add would change some last bits.
    x = (rng.normal(size=(rows, inputs)) * rng.choice([1e-3, 1, 1e3], (rows, inputs))).astype(F)
    w = rng.normal(size=(inputs, outputs)).astype(F)
    got = z.copy()
    accumulate(got, x, w)
    assert np.array_equal(got, in_documented_order(z, x, w))


def test_views_and_strided_arrays_give_the_same_bits():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 96)).astype(F)
    x = rng.normal(size=(6, 40)).astype(F)
    w = rng.normal(size=(40, 192)).astype(F)
    got = z.copy()
    accumulate(got[1:4], x[2:5], w[:, 96:])  # row views, contiguous last axis
    accumulate(got[:, ::2], x[::-1], w[:, ::4])  # strided last axes
    want = z.copy()
    want[1:4] = in_documented_order(z[1:4], x[2:5], w[:, 96:])
    want[:, ::2] = in_documented_order(want[:, ::2], x[::-1], w[:, ::4])
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("rows", "inputs", "outputs"), SHAPES)
def test_sums_from_a_first_term_take_it_then_the_inputs_in_order(rows, inputs, outputs):
    rng = np.random.default_rng(rows * 1000 + outputs + 7)
    start = rng.normal(size=outputs).astype(F)
    x = (rng.normal(size=(rows, inputs)) * rng.choice([1e-3, 1, 1e3], (rows, inputs))).astype(F)
    w = rng.normal(size=(inputs, outputs)).astype(F)
    got = np.full((rows, outputs), np.nan, F)  # only written, never read
    sum_from(got, start, x, w)
    assert np.array_equal(got, in_documented_order(np.tile(start, (rows, 1)), x, w))


def test_sums_from_views_and_strided_arrays_give_the_same_bits():
    rng = np.random.default_rng(2)
    start = rng.normal(size=192).astype(F)
    x = rng.normal(size=(6, 40)).astype(F)
    w = rng.normal(size=(40, 192)).astype(F)
    got = np.zeros((6, 192), F)
    sum_from(got[1:4], start, x[2:5], w)  # row views, contiguous last axes
    sum_from(got[:, ::2], start[::2], x[::-1], w[:, ::2])  # strided: numba loops
    want = np.zeros((6, 192), F)
    want[1:4] = in_documented_order(np.tile(start, (3, 1)), x[2:5], w)
    want[:, ::2] = in_documented_order(np.tile(start[::2], (6, 1)), x[::-1], w[:, ::2])
    assert np.array_equal(got, want)

"""Outputs as JSON read back as the same float32 bits, however a client parses them."""

import json

import numpy as np

from service.api.tensor_json import values_json

# The shortest decimal of this float32 (7.038531e-26, bits 363742205) lies within half a
# float64 ulp of the midpoint to its neighbour: read as float64, then rounded to float32,
# it comes back as the neighbour. A float32 shortest-form encoder fails here.
DOUBLE_ROUNDING = np.array([363742205], np.uint32).view(np.float32)


def test_every_value_reads_back_through_float64_as_the_same_float32():
    rng = np.random.default_rng(9)
    bits = rng.integers(0, 2**32, size=200_000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    edges = np.array([0.0, -0.0, 1.4e-45, 1.1754942e-38, 3.4028235e38, -1.0, 0.1], np.float32)
    values = np.concatenate([values[np.isfinite(values)], edges, DOUBLE_ROUNDING])
    back = np.array(json.loads(values_json(values)), np.float64).astype(np.float32)
    assert back.view(np.uint32).tolist() == values.view(np.uint32).tolist()


def test_rows_stay_rows():
    values = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
    assert json.loads(values_json(values)) == [[0.0, 0.25], [0.5, 0.75], [1.0, 1.25]]

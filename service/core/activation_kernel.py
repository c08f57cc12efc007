"""`activate(code, v)`: a Keras activation applied in place to one float32 vector, compiled.

The codes are `service.core.activations.CODES`. Elementwise activations treat each value
alone; softmax, log_softmax and sparsemax reduce over the vector in index order, so a
row's result never depends on which other rows share a call.
"""

import numpy as np
from numba import njit

from service.core import fmath
from service.core.activations import CODES

F = np.float32
_ZERO, _HALF, _ONE, _TWO, _THREE, _SIX = F(0), F(0.5), F(1), F(2), F(3), F(6)
_SIXTH = F(1.0 / 6.0)
_LEAKY_SLOPE = F(0.2)
_SELU_ALPHA, _SELU_SCALE = F(1.6732632423543772), F(1.0507009873554805)
_INV_SQRT2 = F(0.7071067811865476)
_LEGACY_SLOPE = F(0.2)

LINEAR = CODES["linear"]
TANH = CODES["tanh"]
SIGMOID = CODES["sigmoid"]
HARD_SIGMOID = CODES["hard_sigmoid"]
LEGACY_HARD_SIGMOID = CODES["legacy_hard_sigmoid"]
RELU = CODES["relu"]
RELU6 = CODES["relu6"]
LEAKY_RELU = CODES["leaky_relu"]
ELU = CODES["elu"]
SELU = CODES["selu"]
CELU = CODES["celu"]
GELU = CODES["gelu"]
SOFTPLUS = CODES["softplus"]
SOFTSIGN = CODES["softsign"]
EXPONENTIAL = CODES["exponential"]
SILU = CODES["silu"]
HARD_SILU = CODES["hard_silu"]
HARD_TANH = CODES["hard_tanh"]
TANH_SHRINK = CODES["tanh_shrink"]
LOG_SIGMOID = CODES["log_sigmoid"]
MISH = CODES["mish"]
HARD_SHRINK = CODES["hard_shrink"]
SOFT_SHRINK = CODES["soft_shrink"]
SPARSE_PLUS = CODES["sparse_plus"]
SPARSE_SIGMOID = CODES["sparse_sigmoid"]
SQUAREPLUS = CODES["squareplus"]
SOFTMAX = CODES["softmax"]
LOG_SOFTMAX = CODES["log_softmax"]
SPARSEMAX = CODES["sparsemax"]
GLU = CODES["glu"]


@njit(error_model="numpy")
def _clip(x, low, high):
    return min(max(x, low), high)


@njit(error_model="numpy")
def _elementwise(code, x):
    # The hot codes (tanh, sigmoid) are handled by `activate`'s own loops.
    if code == HARD_SIGMOID:
        return _clip(x + _THREE, _ZERO, _SIX) * _SIXTH
    if code == LEGACY_HARD_SIGMOID:
        return _clip(_LEGACY_SLOPE * x + _HALF, _ZERO, _ONE)
    if code == RELU:
        return max(x, _ZERO)
    if code == RELU6:
        return _clip(x, _ZERO, _SIX)
    if code == LEAKY_RELU:
        return x if x >= _ZERO else _LEAKY_SLOPE * x
    if code == ELU:
        return x if x > _ZERO else fmath.expm1(x)
    if code == SELU:
        return _SELU_SCALE * (x if x > _ZERO else _SELU_ALPHA * fmath.expm1(x))
    if code == CELU:
        return max(x, _ZERO) + fmath.expm1(min(x, _ZERO))
    if code == GELU:
        return _HALF * x * (_ONE + fmath.erf(x * _INV_SQRT2))
    if code == SOFTPLUS:
        return fmath.softplus(x)
    if code == SOFTSIGN:
        return x / (_ONE + abs(x))
    if code == EXPONENTIAL:
        return fmath.exp(x)
    if code == SILU:
        return x * fmath.sigmoid(x)
    if code == HARD_SILU:
        return x * (_clip(x + _THREE, _ZERO, _SIX) * _SIXTH)
    if code == HARD_TANH:
        return _clip(x, -_ONE, _ONE)
    if code == TANH_SHRINK:
        return x - fmath.tanh(x)
    if code == LOG_SIGMOID:
        return -fmath.softplus(-x)
    if code == MISH:
        return x * fmath.tanh(fmath.softplus(x))
    if code == HARD_SHRINK:
        return x if abs(x) > _HALF else _ZERO
    if code == SOFT_SHRINK:
        if x > _HALF:
            return x - _HALF
        return x + _HALF if x < -_HALF else _ZERO
    if code == SPARSE_PLUS:
        if x <= -_ONE:
            return _ZERO
        return F(0.25) * ((x + _ONE) * (x + _ONE)) if x < _ONE else x
    if code == SPARSE_SIGMOID:
        return _ZERO if x <= -_ONE else (_ONE if x >= _ONE else _HALF * (x + _ONE))
    if code == SQUAREPLUS:
        return (x + np.sqrt(x * x + F(4))) * _HALF
    return x


@njit(error_model="numpy")
def _softmax(v, log):
    top = v[0]
    for j in range(1, v.shape[0]):
        top = max(top, v[j])
    total = _ZERO
    for j in range(v.shape[0]):
        v[j] = v[j] - top
        total += fmath.exp(v[j])
    if log:
        log_total = fmath.log(total)
        for j in range(v.shape[0]):
            v[j] = v[j] - log_total
    else:
        for j in range(v.shape[0]):
            v[j] = fmath.exp(v[j]) / total


@njit(error_model="numpy")
def _sparsemax(v):
    # Keras's own formula (TensorFlow backend), cumulative sums in index order.
    ordered = v.copy()
    for k in range(1, ordered.shape[0]):  # insertion sort, descending: rows are short
        value = ordered[k]
        i = k - 1
        while i >= 0 and ordered[i] < value:
            ordered[i + 1] = ordered[i]
            i -= 1
        ordered[i + 1] = value
    cumulative = _ZERO
    support = _ZERO
    support_sum = _ZERO
    for k in range(ordered.shape[0]):
        cumulative += ordered[k]
        if ordered[k] - (cumulative - _ONE) / F(k + 1) > _ZERO:
            support += _ONE
            support_sum += cumulative
    tau = (support_sum - _ONE) / support
    for j in range(v.shape[0]):
        v[j] = max(v[j] - tau, _ZERO)


@njit(error_model="numpy")
def activate(code, v):
    """Apply activation `code` to the float32 vector `v` in place. `glu` leaves its result
    in the first half of `v`."""
    n = v.shape[0]
    if code == LINEAR:
        return
    if code == TANH:
        for j in range(n):
            v[j] = fmath.tanh(v[j])
    elif code == SIGMOID:
        for j in range(n):
            v[j] = fmath.sigmoid(v[j])
    elif code == SOFTMAX:
        _softmax(v, False)
    elif code == LOG_SOFTMAX:
        _softmax(v, True)
    elif code == SPARSEMAX:
        _sparsemax(v)
    elif code == GLU:
        half = n // 2
        for j in range(half):
            v[j] = v[j] * fmath.sigmoid(v[half + j])
    else:
        for j in range(n):
            v[j] = _elementwise(code, v[j])

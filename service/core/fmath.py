"""float32 elementary functions built only from IEEE-exact operations.

Every function here is a fixed sequence of float32 `+ - * /`, `sqrt`, `floor`,
comparisons and exact scaling by powers of two (integer bit arithmetic), compiled by
numba without fastmath, so LLVM neither reassociates nor fuses a multiply and an add.
IEEE 754 defines each of those operations to the bit, in scalar and SIMD registers
alike, so the results are the same on every x86-64 (and any IEEE) CPU. libm's and
numpy's `exp`/`tanh` choose their code per CPU (FMA, AVX-512, SVML), which is why
they are not used.

The polynomials are Cephes' single-precision ones (S. L. Moshier) and Abramowitz and
Stegun 7.1.26 for `erf` beyond 1; errors against float64 are a few float32 ulps.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

F = np.float32
I = np.int32  # noqa: E741

_LOG2E = F(1.44269504088896341)
_LN2_HI = F(0.693359375)  # few mantissa bits: n * _LN2_HI is exact for |n| < 2**10
_LN2_LO = F(-2.12194440e-4)
_EXP_LO = F(-104.0)  # exp below is 0 in float32
_EXP_HI = F(89.0)  # exp above is inf in float32
_SQRT_HALF = F(0.707106781186547524)
_HALF = F(0.5)
_ONE = F(1.0)
_TWO = F(2.0)
_ZERO = F(0.0)


@intrinsic
def _from_bits(typingctx, bits):
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def _to_bits(typingctx, value):
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@njit(error_model="numpy")
def _pow2(n):
    """2**n exactly, for -126 <= n <= 127."""
    return _from_bits(I((n + I(127)) << I(23)))


@njit(error_model="numpy")
def exp(x):
    # Branch-free (every select has both sides computed), so loops over it vectorise.
    clamped = min(max(x, _EXP_LO), _EXP_HI)
    finite = clamped if x == x else _ZERO
    n = np.floor(finite * _LOG2E + _HALF)
    r = finite - n * _LN2_HI
    r = r - n * _LN2_LO
    p = F(1.9875691500e-4) * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * (r * r) + r + _ONE
    k = I(n)
    half = k >> I(1)
    # Two exact-range scalings: results down to the subnormals round once, correctly.
    y = p * _pow2(half) * _pow2(k - half)
    return y if x == x else x


@njit(error_model="numpy")
def expm1(x):
    if abs(x) < _HALF:
        # Taylor series to x**8: its truncation error (< 3e-9) is below float32's.
        p = F(1.0 / 40320.0)
        p = p * x + F(1.0 / 5040.0)
        p = p * x + F(1.0 / 720.0)
        p = p * x + F(1.0 / 120.0)
        p = p * x + F(1.0 / 24.0)
        p = p * x + F(1.0 / 6.0)
        p = p * x + _HALF
        return p * (x * x) + x
    return exp(x) - _ONE


@njit(error_model="numpy")
def log(x):
    """Natural log of a positive normal float32 (the callers pass values >= 1)."""
    bits = _to_bits(x)
    e = F((bits >> I(23)) - I(126))
    m = _from_bits(I((bits & I(0x007FFFFF)) | I(0x3F000000)))  # x = m * 2**e, m in [0.5, 1)
    if m < _SQRT_HALF:
        e = e - _ONE
        m = m + m - _ONE
    else:
        m = m - _ONE
    z = m * m
    y = F(7.0376836292e-2) * m - F(1.1514610310e-1)
    y = y * m + F(1.1676998740e-1)
    y = y * m - F(1.2420140846e-1)
    y = y * m + F(1.4249322787e-1)
    y = y * m - F(1.6668057665e-1)
    y = y * m + F(2.0000714765e-1)
    y = y * m - F(2.4999993993e-1)
    y = y * m + F(3.3333331174e-1)
    y = y * m * z
    y = y + e * _LN2_LO
    y = y - _HALF * z
    return m + y + e * _LN2_HI


@njit(error_model="numpy")
def log1p(x):
    """log(1 + x) for x >= 0, accurate for small x (Goldberg's correction)."""
    u = _ONE + x
    if u == _ONE:
        return x
    return log(u) * (x / (u - _ONE))


@njit(error_model="numpy")
def tanh(x):
    # Both branches computed, then selected: vectorisable.
    z = abs(x)
    s = exp(z + z)
    large = _ONE - _TWO / (s + _ONE)
    large = -large if x < _ZERO else large
    q = x * x
    p = F(-5.70498872745e-3) * q + F(2.06390887954e-2)
    p = p * q - F(5.37397155531e-2)
    p = p * q + F(1.33314422036e-1)
    p = p * q - F(3.33332819422e-1)
    small = p * q * x + x
    return large if z >= F(0.625) else small


@njit(error_model="numpy")
def sigmoid(x):
    return _ONE / (_ONE + exp(-x))


@njit(error_model="numpy")
def softplus(x):
    return max(x, _ZERO) + log1p(exp(-abs(x)))


@njit(error_model="numpy")
def erf(x):
    z = abs(x)
    if z < _ONE:
        s = x * x
        p = F(7.853861353153693e-5) * s - F(8.010193625184903e-4)
        p = p * s + F(5.188327685732524e-3)
        p = p * s - F(2.685381193529856e-2)
        p = p * s + F(1.128358514861418e-1)
        p = p * s - F(3.761262582423300e-1)
        p = p * s + F(1.128379165726710e0)
        return x * p
    t = _ONE / (_ONE + F(0.3275911) * z)
    p = F(1.061405429) * t - F(1.453152027)
    p = p * t + F(1.421413741)
    p = p * t - F(0.284496736)
    p = p * t + F(0.254829592)
    y = _ONE - p * t * exp(-(z * z))
    return -y if x < _ZERO else y

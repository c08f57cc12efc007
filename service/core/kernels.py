"""The compiled layer kernels: one fixed sequence of float32 operations per session row.

Every kernel walks rows (sessions) one at a time and, within a row, timesteps in order;
nothing is shared between rows, so a row's bits never depend on the batch around it or
on how its sequence was chunked. A product with a weight matrix is accumulated input by
input, `z[j] = (((b[j] + x[0] * W[0, j]) + x[1] * W[1, j]) + ...)` (see `_accumulate`):
LLVM may compute several `j` at once in SIMD lanes, which changes no bit, but it may not
reorder the sum over inputs or fuse a multiply with its add, because the kernels are
compiled without fastmath. Activations come from `service.core.fmath`, never from libm.
"""

import numpy as np
from numba import njit

from service.core.activation_kernel import activate

F = np.float32
_ZERO, _ONE = F(0), F(1)


@njit(error_model="numpy")
def _accumulate(z, x, w):
    """z[j] += x[i] * w[i, j] for i = 0, 1, 2, ... in that order.

    Four inputs per pass over z, each still added alone and in order: a quarter of the
    loads and stores of z, the same bits (measured: -15 to -30% per product)."""
    n = z.shape[0]
    i = 0
    while i + 4 <= x.shape[0]:
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        for j in range(n):
            z[j] = (((z[j] + x0 * w0[j]) + x1 * w1[j]) + x2 * w2[j]) + x3 * w3[j]
        i += 4
    while i < x.shape[0]:
        xi, wi = x[i], w[i]
        for j in range(n):
            z[j] += xi * wi[j]
        i += 1


@njit(nogil=True, error_model="numpy")
def lstm(x, state, kernel, recurrent_kernel, bias, activation, recurrent_activation, sequences):
    batch, steps = x.shape[0], x.shape[1]
    u = recurrent_kernel.shape[0]
    y = np.empty((batch, steps if sequences else 1, u), F)
    new_state = np.empty((batch, 2 * u), F)
    z = np.empty(4 * u, F)
    h = np.empty(u, F)
    c = np.empty(u, F)
    g = np.empty(u, F)
    for b in range(batch):
        h[:] = state[b, :u]
        c[:] = state[b, u:]
        for t in range(steps):
            z[:] = bias
            _accumulate(z, x[b, t], kernel)
            _accumulate(z, h, recurrent_kernel)
            activate(recurrent_activation, z[:u])
            activate(recurrent_activation, z[u : 2 * u])
            activate(activation, z[2 * u : 3 * u])
            activate(recurrent_activation, z[3 * u :])
            for j in range(u):
                c[j] = z[u + j] * c[j] + z[j] * z[2 * u + j]
                g[j] = c[j]
            activate(activation, g)
            for j in range(u):
                h[j] = z[3 * u + j] * g[j]
            if sequences:
                y[b, t] = h
        if not sequences:
            y[b, 0] = h
        new_state[b, :u] = h
        new_state[b, u:] = c
    return y, new_state


@njit(nogil=True, error_model="numpy")
def gru(
    x,
    state,
    kernel,
    gates_kernel,
    candidate_kernel,
    input_bias,
    recurrent_bias,
    activation,
    recurrent_activation,
    reset_after,
    sequences,
):
    """Keras's GRU: `gates_kernel` and `candidate_kernel` are the recurrent kernel's
    first 2*units and last units columns; without reset_after the recurrent bias is 0."""
    batch, steps = x.shape[0], x.shape[1]
    u = candidate_kernel.shape[0]
    y = np.empty((batch, steps if sequences else 1, u), F)
    new_state = np.empty((batch, u), F)
    projected = np.empty(3 * u, F)
    gates = np.empty(2 * u, F)
    candidate = np.empty(u, F)
    reset_h = np.empty(u, F)
    h = np.empty(u, F)
    for b in range(batch):
        h[:] = state[b]
        for t in range(steps):
            projected[:] = input_bias
            _accumulate(projected, x[b, t], kernel)
            gates[:] = recurrent_bias[: 2 * u]
            _accumulate(gates, h, gates_kernel)
            for j in range(2 * u):
                gates[j] = projected[j] + gates[j]
            activate(recurrent_activation, gates[:u])
            activate(recurrent_activation, gates[u:])
            if reset_after:
                candidate[:] = recurrent_bias[2 * u :]
                _accumulate(candidate, h, candidate_kernel)
                for j in range(u):
                    candidate[j] = projected[2 * u + j] + gates[u + j] * candidate[j]
            else:
                for j in range(u):
                    reset_h[j] = gates[u + j] * h[j]
                candidate[:] = _ZERO
                _accumulate(candidate, reset_h, candidate_kernel)
                for j in range(u):
                    candidate[j] = projected[2 * u + j] + candidate[j]
            activate(activation, candidate)
            for j in range(u):
                h[j] = gates[j] * h[j] + (_ONE - gates[j]) * candidate[j]
            if sequences:
                y[b, t] = h
        if not sequences:
            y[b, 0] = h
        new_state[b] = h
    return y, new_state


@njit(nogil=True, error_model="numpy")
def simple_rnn(x, state, kernel, recurrent_kernel, bias, activation, sequences):
    batch, steps = x.shape[0], x.shape[1]
    u = recurrent_kernel.shape[0]
    y = np.empty((batch, steps if sequences else 1, u), F)
    new_state = np.empty((batch, u), F)
    z = np.empty(u, F)
    h = np.empty(u, F)
    for b in range(batch):
        h[:] = state[b]
        for t in range(steps):
            z[:] = bias
            _accumulate(z, x[b, t], kernel)
            _accumulate(z, h, recurrent_kernel)
            activate(activation, z)
            h[:] = z
            if sequences:
                y[b, t] = h
        if not sequences:
            y[b, 0] = h
        new_state[b] = h
    return y, new_state


@njit(nogil=True, error_model="numpy")
def dense(x, kernel, bias, activation):
    batch, steps = x.shape[0], x.shape[1]
    y = np.empty((batch, steps, kernel.shape[1]), F)
    for b in range(batch):
        for t in range(steps):
            z = y[b, t]
            z[:] = bias
            _accumulate(z, x[b, t], kernel)
            activate(activation, z)
    return y


@njit(nogil=True, error_model="numpy")
def pointwise(x, activation):
    y = x.copy()
    for b in range(y.shape[0]):
        for t in range(y.shape[1]):
            activate(activation, y[b, t])
    return y


@njit(nogil=True, error_model="numpy")
def normalize(x, gamma, beta, epsilon, moving_mean, moving_variance, moving, rms_scaling):
    """LayerNormalization (statistics of each row's features, summed in index order) or an
    inference-time BatchNormalization (moving statistics): x * inv + (beta - mean * inv)."""
    batch, steps, n = x.shape
    y = np.empty_like(x)
    inv = np.empty(n, F)
    mean = np.empty(n, F)
    count = F(n)
    for b in range(batch):
        for t in range(steps):
            row = x[b, t]
            if moving:
                mean[:] = moving_mean
                for j in range(n):
                    inv[j] = _ONE / np.sqrt(moving_variance[j] + epsilon)
            else:
                total = _ZERO
                for j in range(n):
                    total += row[j]
                m = total / count
                squares = _ZERO
                for j in range(n):
                    d = row[j] - m
                    squares += d * d
                scale = _ONE / np.sqrt(squares / count + epsilon)
                mean[:] = m
                inv[:] = scale
            out = y[b, t]
            if rms_scaling:
                for j in range(n):
                    out[j] = row[j] * inv[j] * gamma[j]
            else:
                for j in range(n):
                    scaled = inv[j] * gamma[j]
                    out[j] = row[j] * scaled + (beta[j] - mean[j] * scaled)
    return y

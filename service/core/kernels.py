"""The compiled layer kernels: one fixed sequence of float32 operations per session row.

Every kernel walks rows (sessions) one at a time and, within a row, timesteps in order;
nothing is shared between rows, so a row's bits never depend on the batch around it or
on how its sequence was chunked. A product with a weight matrix is accumulated input by
input, `z[j] = (((b[j] + x[0] * W[0, j]) + x[1] * W[1, j]) + ...)` (see
`service.core.products`): several `j` may be computed at once in SIMD lanes, which changes
no bit, but the sum over inputs is never reordered and no multiply is fused with its add.
Activations come from `service.core.fmath`, never from libm.

The input terms of a timestep's sums (`b + x_t @ W`) depend on no state, so each kernel
computes them for every row and timestep of the call first (`_project`), several
timesteps per pass over W, and then only the recurrent terms step by step: the same
operations in the same order per value, so the same bits as one timestep at a time.
"""

import numpy as np
from numba import njit

from service.core import fmath
from service.core.activation_kernel import SIGMOID, TANH, activate
from service.core.products import accumulate, sum_from

F = np.float32
_ZERO, _ONE = F(0), F(1)


# Rows (sessions) stepped side by side through a chunk: their recurrent products share
# each load of the recurrent kernel. It changes no bit (every z[r, j] sums its own terms
# in the same order). A call of one timestep steps all its rows at once.
_ROW_GROUP = 8


@njit(error_model="numpy")
def _group(batch, steps):
    return batch if steps == 1 else min(batch, _ROW_GROUP)


@njit(error_model="numpy")
def copy_vector(source, target):
    # A loop over two C-contiguous vectors, vectorised: numba's slice copies and 2-D
    # element loops with a run-time column offset are several times slower.
    for j in range(source.shape[0]):
        target[j] = source[j]


@njit(error_model="numpy")
def _project(x, w, bias):
    """bias + x[s] @ w for every sample s of the (samples, inputs) matrix x, each sum in
    input order: the first terms of every timestep's sum, which depend on no state, so
    they are computed for all timesteps of a call before the recurrence (weights read once
    per group of samples, not once per timestep)."""
    out = np.empty((x.shape[0], w.shape[1]), F)
    sum_from(out, bias, x, w)
    return out


@njit(error_model="numpy")
def _sigmoid_tanh_cell(z, h, c, out):
    """Keras's default LSTM cell in two passes over the units, without storing the gates
    or calling `activate` five times per row: each value takes the same operations as
    `_any_cell`'s, so the same bits. (One pass holding all five activations measured ~9%
    slower: more registers than the target has.)"""
    u = h.shape[0]
    for j in range(u):
        i = fmath.sigmoid(z[j])
        f = fmath.sigmoid(z[u + j])
        g = fmath.tanh(z[2 * u + j])
        c[j] = f * c[j] + i * g
    for j in range(u):
        hj = fmath.sigmoid(z[3 * u + j]) * fmath.tanh(c[j])
        h[j] = hj
        out[j] = hj


@njit(error_model="numpy")
def _any_cell(z, h, c, out, g, activation, recurrent_activation):
    u = h.shape[0]
    # One call per gate: softmax and the like reduce over their vector.
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
    copy_vector(h, out)


@njit(nogil=True, error_model="numpy")
def lstm_into(
    x,
    states,
    new_states,
    offset,
    kernel,
    recurrent_kernel,
    bias,
    activation,
    recurrent_activation,
    sequences,
):
    """The layer's [h | c] read from columns offset : offset + 2 * units of `states` and
    stepped in place in the same columns of `new_states` (`run_model`'s whole state
    arrays: no copy of the layer's columns in or out, which numba's 2-D slice copies made
    ~4 µs of a layer's ~60 at 64 rows x 1 step). Returns y."""
    batch, steps = x.shape[0], x.shape[1]
    u = recurrent_kernel.shape[0]
    h0, c0 = offset, offset + u
    y = np.empty((batch, steps if sequences else 1, u), F)
    for b in range(batch):
        copy_vector(states[b, h0 : h0 + 2 * u], new_states[b, h0 : h0 + 2 * u])
    # The recurrent terms are added to the input terms where they lie.
    z_all = _project(x.reshape(batch * steps, x.shape[2]), kernel, bias).reshape(
        batch, steps, 4 * u
    )
    fused = activation == TANH and recurrent_activation == SIGMOID
    g = np.empty(u, F)
    group = _group(batch, steps)
    for b0 in range(0, batch, group):
        rows = min(group, batch - b0)
        for t in range(steps):
            h = new_states[b0 : b0 + rows, h0:c0]
            accumulate(z_all[b0 : b0 + rows, t], h, recurrent_kernel)
            for r in range(rows):
                # Without sequences, y's one step is written each step: the last one stays.
                zr, out = z_all[b0 + r, t], y[b0 + r, t if sequences else 0]
                hr, cr = new_states[b0 + r, h0:c0], new_states[b0 + r, c0 : c0 + u]
                if fused:
                    _sigmoid_tanh_cell(zr, hr, cr, out)
                else:
                    _any_cell(zr, hr, cr, out, g, activation, recurrent_activation)
    return y


@njit(nogil=True, error_model="numpy")
def lstm(x, state, kernel, recurrent_kernel, bias, activation, recurrent_activation, sequences):
    new_state = np.empty_like(state)
    y = lstm_into(
        x,
        state,
        new_state,
        0,
        kernel,
        recurrent_kernel,
        bias,
        activation,
        recurrent_activation,
        sequences,
    )
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
    projected = _project(x.reshape(batch * steps, x.shape[2]), kernel, input_bias)
    group = _group(batch, steps)
    gates = np.empty((group, 2 * u), F)
    candidate = np.empty((group, u), F)
    reset_h = np.empty((group, u), F)
    h = np.empty((group, u), F)
    for b0 in range(0, batch, group):
        rows = min(group, batch - b0)
        for r in range(rows):
            h[r] = state[b0 + r]
        for t in range(steps):
            for r in range(rows):
                gates[r] = recurrent_bias[: 2 * u]
            accumulate(gates[:rows], h[:rows], gates_kernel)
            for r in range(rows):
                pr, gr = projected[(b0 + r) * steps + t], gates[r]
                for j in range(2 * u):
                    gr[j] = pr[j] + gr[j]
                activate(recurrent_activation, gr[:u])
                activate(recurrent_activation, gr[u:])
            if reset_after:
                for r in range(rows):
                    candidate[r] = recurrent_bias[2 * u :]
                accumulate(candidate[:rows], h[:rows], candidate_kernel)
                for r in range(rows):
                    pr, gr, cr = projected[(b0 + r) * steps + t], gates[r], candidate[r]
                    for j in range(u):
                        cr[j] = pr[2 * u + j] + gr[u + j] * cr[j]
            else:
                for r in range(rows):
                    gr, hr = gates[r], h[r]
                    for j in range(u):
                        reset_h[r, j] = gr[u + j] * hr[j]
                    candidate[r] = _ZERO
                accumulate(candidate[:rows], reset_h[:rows], candidate_kernel)
                for r in range(rows):
                    pr, cr = projected[(b0 + r) * steps + t], candidate[r]
                    for j in range(u):
                        cr[j] = pr[2 * u + j] + cr[j]
            for r in range(rows):
                gr, cr, hr = gates[r], candidate[r], h[r]
                activate(activation, cr)
                for j in range(u):
                    hr[j] = gr[j] * hr[j] + (_ONE - gr[j]) * cr[j]
                if sequences:
                    y[b0 + r, t] = hr
        for r in range(rows):
            if not sequences:
                y[b0 + r, 0] = h[r]
            new_state[b0 + r] = h[r]
    return y, new_state


@njit(nogil=True, error_model="numpy")
def simple_rnn(x, state, kernel, recurrent_kernel, bias, activation, sequences):
    batch, steps = x.shape[0], x.shape[1]
    u = recurrent_kernel.shape[0]
    y = np.empty((batch, steps if sequences else 1, u), F)
    new_state = np.empty((batch, u), F)
    z_all = _project(x.reshape(batch * steps, x.shape[2]), kernel, bias).reshape(batch, steps, u)
    group = _group(batch, steps)
    h = np.empty((group, u), F)
    for b0 in range(0, batch, group):
        rows = min(group, batch - b0)
        for r in range(rows):
            h[r] = state[b0 + r]
        for t in range(steps):
            z = z_all[b0 : b0 + rows, t]
            accumulate(z, h[:rows], recurrent_kernel)
            for r in range(rows):
                zr = z_all[b0 + r, t]
                activate(activation, zr)
                h[r] = zr
                if sequences:
                    y[b0 + r, t] = h[r]
        for r in range(rows):
            if not sequences:
                y[b0 + r, 0] = h[r]
            new_state[b0 + r] = h[r]
    return y, new_state


@njit(nogil=True, error_model="numpy")
def dense(x, kernel, bias, activation):
    batch, steps = x.shape[0], x.shape[1]
    y = _project(x.reshape(batch * steps, x.shape[2]), kernel, bias)
    for s in range(batch * steps):
        activate(activation, y[s])
    return y.reshape(batch, steps, kernel.shape[1])


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

"""`run_model`: every stage of a model in one compiled call.

A model is a program of stages, each a row of `ints` naming its kernel (`KIND`), its
activation codes and flags, and where its weights are: rows of `layout` (start, rows,
columns; columns 0 for a vector) into the one float32 buffer `weights`. Plain arrays, so
one compiled function serves every model and a call passes five arrays (a typed list
costs ~0.75 µs more to pass). Each stage calls the same kernel of
`service.core.kernels` with the same arguments as when called from Python, so the same
bits; only the dispatches from Python (argument typing and boxing, ~1-2 µs each) and the
glue between stages are saved.
"""

import numpy as np
from numba import njit

from service.core import kernels
from service.core.activations import GLU

LSTM, GRU, SIMPLE_RNN, DENSE, POINTWISE, NORMALIZE = range(6)

# The columns of a stage's row of `ints`.
KIND = 0
ACTIVATION = 1
RECURRENT_ACTIVATION = 2
FLAG = 3  # return_sequences; a normalization's moving statistics
SECOND_FLAG = 4  # GRU's reset_after; a normalization's rms_scaling
STATE_SIZE = 5
FIRST_MATRIX = 6
FIRST_VECTOR = 7
FIELDS = 8


@njit(nogil=True, error_model="numpy")
def _matrix(weights, layout, i):
    start, rows, columns = layout[i, 0], layout[i, 1], layout[i, 2]
    return weights[start : start + rows * columns].reshape(rows, columns)


@njit(nogil=True, error_model="numpy")
def _vector(weights, layout, i):
    return weights[layout[i, 0] : layout[i, 0] + layout[i, 1]]


@njit(nogil=True, error_model="numpy")
def _halved_by_glu(y, activation):
    if activation == GLU:
        return np.ascontiguousarray(y[:, :, : y.shape[2] // 2])
    return y


@njit(nogil=True, error_model="numpy")
def _columns(states, offset, size):
    # Row by row, a loop over two contiguous vectors: numba's copy of a 2-D slice
    # (np.ascontiguousarray, slice assignment) costs several times as much.
    own = np.empty((states.shape[0], size), np.float32)
    for b in range(states.shape[0]):
        kernels.copy_vector(states[b, offset : offset + size], own[b])
    return own


@njit(nogil=True, error_model="numpy")
def _put_columns(out_state, offset, new):
    for b in range(new.shape[0]):
        kernels.copy_vector(new[b], out_state[b, offset : offset + new.shape[1]])


@njit(nogil=True, error_model="numpy")
def run_model(x, states, ints, layout, weights, epsilons):
    """x: (B, T, F); states: (B, state_size). Returns (y, new_states) of the whole model,
    y (B, T, U), or (B, 1, U) when the model keeps only the last step."""
    out_state = np.empty((x.shape[0], states.shape[1]), np.float32)
    y = x
    offset = 0
    for k in range(ints.shape[0]):
        kind, activation = ints[k, KIND], ints[k, ACTIVATION]
        recurrent_activation = ints[k, RECURRENT_ACTIVATION]
        flag, second_flag = ints[k, FLAG] != 0, ints[k, SECOND_FLAG] != 0
        m, v, size = ints[k, FIRST_MATRIX], ints[k, FIRST_VECTOR], ints[k, STATE_SIZE]
        if kind == LSTM:
            # Reads and writes its own columns of the whole state arrays.
            y = kernels.lstm_into(
                y,
                states,
                out_state,
                offset,
                _matrix(weights, layout, m),
                _matrix(weights, layout, m + 1),
                _vector(weights, layout, v),
                activation,
                recurrent_activation,
                flag,
            )
        elif kind == GRU:
            y, new = kernels.gru(
                y,
                _columns(states, offset, size),
                _matrix(weights, layout, m),
                _matrix(weights, layout, m + 1),
                _matrix(weights, layout, m + 2),
                _vector(weights, layout, v),
                _vector(weights, layout, v + 1),
                activation,
                recurrent_activation,
                second_flag,
                flag,
            )
            _put_columns(out_state, offset, new)
        elif kind == SIMPLE_RNN:
            y, new = kernels.simple_rnn(
                y,
                _columns(states, offset, size),
                _matrix(weights, layout, m),
                _matrix(weights, layout, m + 1),
                _vector(weights, layout, v),
                activation,
                flag,
            )
            _put_columns(out_state, offset, new)
        elif kind == DENSE:
            y = _halved_by_glu(
                kernels.dense(
                    y, _matrix(weights, layout, m), _vector(weights, layout, v), activation
                ),
                activation,
            )
        elif kind == POINTWISE:
            y = _halved_by_glu(kernels.pointwise(y, activation), activation)
        else:
            y = kernels.normalize(
                y,
                _vector(weights, layout, v),
                _vector(weights, layout, v + 1),
                epsilons[k],
                _vector(weights, layout, v + 2),
                _vector(weights, layout, v + 3),
                flag,
                second_flag,
            )
        offset += size  # 0 for any stage but a recurrent one: only those hold state
    return y, out_state

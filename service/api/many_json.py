"""`POST /v1/chunks`'s inputs, every chunk's numbers parsed at once.

msgspec makes a Python float per input value and numpy then reads them back (~6 µs per
1-step chunk of 16 features). Here the chunks' `inputs` stay raw JSON, are joined into one
array of chunks, and simdjson parses all the numbers into one float64 buffer (rounded to
float64 as msgspec rounds them, so the float32 values are the same bits). That buffer
flattens any nesting, so the shape is proven from the text, which simdjson has found to be
valid JSON. Chunks of one shape (the usual request): without whitespace and number
characters, the text must read exactly as T rows of F values per chunk do (`[[,,],[,,]]`
for 2 x 3); only a one-value row `[x]` reads as an empty `[]` does, so the count of
numbers must be T x F per chunk too. Chunks of several shapes: only numbers, brackets and
commas, every number at depth 3 and nothing deeper, each chunk and row non-empty, and a
row's width its commas plus one. Anything else (a ragged or empty chunk, a value that is
not a number, a number simdjson refuses) is left to the ordinary decoding, which answers
exactly as before."""

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import simdjson

from service.core.arrays import F32, Floats

_WHITESPACE = b" \t\r\n"
_NUMBER_OR_LIST = b"0123456789.eE+-[],"
_NOT_LIST = _WHITESPACE + b"0123456789.eE+-"  # what the lists' outline leaves out
_OPEN, _CLOSE, _COMMA = 1, 2, 3
_KIND = np.zeros(256, np.int8)
_KIND[[ord("["), ord("]"), ord(",")]] = [_OPEN, _CLOSE, _COMMA]


def chunk_arrays(raws: list[Any]) -> tuple[Sequence[Floats], list[bool]] | None:
    """Each chunk's (T, F) float32 array and whether its values are all finite, as
    `inputs.as_arrays` gives them but as two columns (chunks of one shape: one
    (chunks, T, F) array); None when the text is not chunks of equal-width rows of numbers.
    `raws`: each chunk's `inputs` as JSON text (`msgspec.Raw`)."""
    text = b"[" + b",".join(raws) + b"]"
    one = _one_shape(text, bytes(raws[0]), len(raws))
    if one is not None:
        values = _numbers(text)
        if values is None or values.size != len(raws) * one[0] * one[1]:
            return None
        arrays = values.reshape(len(raws), one[0], one[1])
        finite = cast(list[bool], np.isfinite(arrays).all(axis=(1, 2)).tolist())
        return cast(Sequence[Floats], arrays), finite  # indexed and iterated as one
    packed = text.translate(None, _WHITESPACE)
    if packed.translate(None, _NUMBER_OR_LIST):  # strings, objects, literals
        return None
    shape = _shape(packed, len(raws))
    if shape is None:
        return None
    steps, features = shape
    sizes = steps * features
    flat = _numbers(text)
    if flat is None or flat.size != sizes.sum():
        return None
    starts = np.cumsum(sizes) - sizes
    finite = cast(list[bool], np.logical_and.reduceat(np.isfinite(flat), starts).tolist())
    inputs = [
        flat[start : start + t * f].reshape(t, f)
        for start, t, f in zip(starts.tolist(), steps.tolist(), features.tolist(), strict=True)
    ]
    return inputs, finite


def _numbers(text: bytes) -> Floats | None:
    """Every number of `text` (valid JSON lists of numbers) as float32, in order; None when
    simdjson refuses one."""
    try:
        document = simdjson.Parser().parse(text)
        assert isinstance(document, simdjson.Array)  # `text` is a list
        values = np.frombuffer(document.as_buffer(of_type="d"), np.float64)
    except (TypeError, ValueError, RuntimeError):  # a number simdjson refuses
        return None
    with np.errstate(over="ignore"):  # beyond float32: infinite, refused by `check_chunk`
        return values.astype(F32)


def _one_shape(text: bytes, first: bytes, chunks: int) -> tuple[int, int] | None:
    """(T, F) when the outline of `text` is that of `chunks` chunks of T rows of F values,
    the first chunk's shape; None otherwise (the numbers' count is checked after)."""
    chunk = first.translate(None, _NOT_LIST)
    row = chunk[1 : chunk.find(b"]") + 1]  # `[,,]`
    features = len(row) - 1
    if features < 1 or row != b"[" + b"," * (features - 1) + b"]":
        return None
    steps = (len(chunk) - 1) // (len(row) + 1)
    if chunk != b"[" + b",".join([row] * steps) + b"]":
        return None
    if text.translate(None, _NOT_LIST) != b"[" + b",".join([chunk] * chunks) + b"]":
        return None
    return steps, features


def _shape(packed: bytes, chunks: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps and features per chunk of `[chunk,...]` (valid JSON without whitespace, only
    numbers and lists), from its brackets and commas alone; None unless every chunk is a
    non-empty list of non-empty rows of one width."""
    kinds = _KIND[np.frombuffer(packed, np.uint8)]
    at = np.flatnonzero(kinds)  # the brackets and commas, in order
    kind = kinds[at]
    opens, commas = kind == _OPEN, kind == _COMMA
    depth = np.cumsum(opens, dtype=np.int32) - np.cumsum(kind == _CLOSE, dtype=np.int32)
    number_after = np.diff(at) > 1  # a number lies between this mark and the next
    if depth.max() != 3 or (depth[:-1][number_after] != 3).any():
        return None
    chunk_open = opens & (depth == 2)
    row_open = np.flatnonzero(opens & (depth == 3))
    row_close = np.flatnonzero((kind == _CLOSE) & (depth == 2))
    if int(chunk_open.sum()) != chunks or not number_after[row_open].all():
        return None
    row_commas = np.cumsum(commas & (depth == 3))
    widths = row_commas[row_close] - row_commas[row_open] + 1
    chunk_of_row = np.cumsum(chunk_open)[row_open] - 1
    steps = np.bincount(chunk_of_row, minlength=chunks)
    if not steps.all():
        return None
    features = widths[np.cumsum(steps) - steps]
    if (widths != features[chunk_of_row]).any():
        return None
    return steps, features

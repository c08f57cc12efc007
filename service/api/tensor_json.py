"""Large JSON tensors decoded and encoded off the event loop, in slices.

Decoding a multi-megabyte JSON body, or encoding 800,000 output values, is one long C call
that holds the interpreter lock: run on the event loop (or in one piece in a thread) it
stalls every other request for its whole length. Here the work runs in the heavy-work
thread (`HeavyWork.call_sliced`: one hand-off for the whole job while no other heavy work
waits) in slices of about `SLICE_BYTES` of JSON each, so the loop serves other keys' short
chunks between slices (it gets the interpreter lock within `LSTM_GIL_SWITCH_INTERVAL_MS` of
asking, at a slice's end at the latest).

Decoding: the document around the `inputs` rows is checked alone (found at once when the
body starts `{"inputs": [` and ends with the list, the offset and `}`; otherwise by one
pass over the whole body with `inputs` kept raw), then the rows are cut after a `]` that a
`,` follows and decoded piece by piece. If every piece `[A]`, `[B]`, ... is a JSON list of
rows, then `[A,B,...]` (the original) is the list of all their rows, wherever the cuts
fell; if a piece is not, the whole body is decoded again the ordinary way for the ordinary
error.
"""

import re
from collections.abc import Callable, Generator
from typing import Annotated

import msgspec
import numpy as np
import simdjson

from service.core.arrays import F32, Floats
from service.core.fairness import HeavyWork
from service.core.inputs import as_array
from service.errors import InvalidInput

SLICE_BYTES = 256 * 1024
# Output values encoded per slice: about SLICE_BYTES of JSON text.
SLICE_VALUES = SLICE_BYTES // 16
_WHITESPACE = b" \t\r\n"
# A row's end is the first `]` after a cut's target in a list of numbers, the second or so in
# other valid JSON; past this many tries the rest stays one piece (and fails as one).
_CUT_TRIES = 64


class _Sequence(msgspec.Struct, forbid_unknown_fields=True):
    inputs: msgspec.Raw


class _Chunk(_Sequence, forbid_unknown_fields=True):
    offset: Annotated[int, msgspec.Meta(ge=0)] | None = None


_SKELETONS: dict[bool, msgspec.json.Decoder[_Sequence]] = {
    False: msgspec.json.Decoder(_Sequence),
    True: msgspec.json.Decoder(_Chunk),
}
_ROWS = msgspec.json.Decoder(list[list[float]])
_ENCODER = msgspec.json.Encoder()


# `{"inputs": [` at the start, and `]` then only the offset and `}` at the end: the list's
# span is known without reading the rows, and what surrounds it is checked alone.
_HEAD = re.compile(rb'[ \t\r\n]*\{[ \t\r\n]*"inputs"[ \t\r\n]*:[ \t\r\n]*\[')
_TAIL = re.compile(rb'\][ \t\r\n]*(,[ \t\r\n]*"offset"[ \t\r\n]*:[^\]\[{}",]*)?\}[ \t\r\n]*\Z')
_TAIL_BYTES = 256
_SPACES = re.compile(rb"[ \t\r\n]*")
_OPEN_BRACKET = ord("[")

Layout = tuple[list[tuple[int, int]], int | None]  # the rows' cuts in the body, the offset


def _layout(body: bytes, chunk: bool) -> Layout | None:
    """Where the `inputs` rows are in `body` (cut in slices) and the offset; None when the
    ordinary decoding must answer (the body is not such a document)."""
    head = _HEAD.match(body)
    tail = _TAIL.search(body, max(0, len(body) - _TAIL_BYTES)) if head else None
    if head and tail and tail.start() >= head.end() - 1:
        rows = (head.end(), tail.start())  # inside the list
        outline = body[: rows[0]] + body[rows[1] :]  # `{"inputs": []...}`
    else:  # another layout: one pass over the whole body finds the list
        return _layout_by_decoding(body, chunk)
    try:
        skeleton = _SKELETONS[chunk].decode(outline)
    except msgspec.DecodeError:  # ValidationError included
        return None
    return _cuts(body, *rows, SLICE_BYTES), getattr(skeleton, "offset", None)


def _layout_by_decoding(body: bytes, chunk: bool) -> Layout | None:
    try:
        skeleton = _SKELETONS[chunk].decode(body)
    except msgspec.DecodeError:
        return None
    raw = bytes(skeleton.inputs)
    head = raw.find(b"[")
    close = raw.rfind(b"]")
    if head == -1 or close <= head or raw[:head].strip(_WHITESPACE):
        return None
    start = body.find(raw)  # the raw list is a slice of the body itself
    if start == -1:
        return None
    offset = getattr(skeleton, "offset", None)
    return _cuts(body, start + head + 1, start + close, SLICE_BYTES), offset


def _cuts(data: bytes, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """Spans of `data[start:end]` (a list's inside) of about `size` bytes, each ending after
    a `]` that a `,` follows; the commas between spans are left out."""
    spans = []
    while end - start > size:
        close = data.find(b"]", start + size, end)
        for _ in range(_CUT_TRIES):
            if close == -1:
                break
            after = _SPACES.match(data, close + 1, end).end()  # type: ignore[union-attr]
            if after < end and data[after] == ord(","):
                break
            close = data.find(b"]", close + 1, end)
        else:
            close = -1
        if close == -1:
            break
        spans.append((start, close + 1))
        start = after + 1
    spans.append((start, end))
    return spans


def open_brackets(text: bytes) -> int:
    """How many `[` the text holds: numpy compares many bytes per instruction where
    `bytes.count` takes one at a time (a 256 KiB slice of rows: ~30 against ~85-200 µs)."""
    return int(np.count_nonzero(np.frombuffer(text, np.uint8) == _OPEN_BRACKET))


def number_rows(rows: object, brackets: int) -> Floats | None:
    """A simdjson value that is a list of T lists of F numbers as (T, F) float32, without a
    Python float per value; None for anything else. `brackets`: the count of `[` in the
    JSON text it came from, where no string holds one.

    simdjson rounds each number to float64 as msgspec does, so the float32 values are the
    same bits. Its buffer flattens nested arrays whatever their shape: the rows are proven
    flat and of equal width by their lengths (each an array of F values), the leaves' count
    (T x F) and the brackets (T + 1: no array deeper than a row)."""
    if not isinstance(rows, simdjson.Array) or not len(rows):
        return None
    values = np.frombuffer(rows.as_buffer(of_type="d"), dtype=np.float64)
    widths = {len(row) if isinstance(row, simdjson.Array) else 0 for row in rows}
    steps, width = len(rows), widths.pop() if len(widths) == 1 else 0
    if not width or values.size != steps * width or brackets != steps + 1:
        return None
    with np.errstate(over="ignore"):  # beyond float32: infinite, refused by `check_chunk`
        return values.astype(F32).reshape(steps, width)


def _piece(data: bytes, start: int, end: int) -> Floats | None:
    text = b"[" + data[start:end] + b"]"
    try:
        fast = number_rows(simdjson.Parser().parse(text), open_brackets(text))
    except (TypeError, ValueError, RuntimeError):
        fast = None
    if fast is not None:
        return fast
    try:
        return as_array(_ROWS.decode(text))
    except (msgspec.DecodeError, InvalidInput):
        return None


async def decode_rows(
    heavy: HeavyWork,
    body: bytes,
    chunk: bool,
    ordinary: Callable[[bytes], tuple[Floats, int | None]],
) -> tuple[Floats, int | None]:
    """A JSON body `{"inputs": T x F[, "offset": n]}` decoded in slices in the heavy-work
    thread; `ordinary(body)` (same result, same errors) decodes it when a slice fails."""
    return await heavy.call_sliced(_decoding(body, chunk, ordinary))


def _decoding(
    body: bytes, chunk: bool, ordinary: Callable[[bytes], tuple[Floats, int | None]]
) -> Generator[None, None, tuple[Floats, int | None]]:
    layout = _layout(body, chunk)
    yield
    if layout is None:
        return ordinary(body)
    cuts, offset = layout
    pieces: list[Floats] = []
    for start, end in cuts:
        piece = _piece(body, start, end)
        yield
        if piece is None or (pieces and piece.shape[1] != pieces[0].shape[1]):
            return ordinary(body)
        pieces.append(piece)
    return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)), offset


def values_json(values: Floats) -> bytes:
    """float32 `values` as (nested) JSON lists of their exact float64 values, which read
    back as the same float32 however a client parses them (docs/decisions.md: the float32
    shortest form does not, once read as float64 first)."""
    return _ENCODER.encode(values.tolist())


def _encoded(values: Floats, first: bool = True, last: bool = True) -> bytes:
    """`values` as a JSON list; without its `[` unless `first`, its `]` unless `last`."""
    text = values_json(values)
    return text[0 if first else 1 : len(text) if last else -1]


class EncodedRows:
    """An `OutputSink`: each slice of a long computation's outputs encoded as JSON on the
    event loop as it comes, while the heavy-work thread computes the next slice (the loop
    is idle meanwhile), so that the answer's values are ready when the runner ends."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self._rows: list[Floats] = []
        self._texts: list[bytes] = []  # each slice's rows, without the list's brackets
        self._values = 0  # in the texts not yet joined into `_parts`
        self._parts: list[bytes] = []  # texts joined, about SLICE_VALUES values each
        self._usable = True

    def add(self, outputs: Floats) -> None:
        if not self._usable:
            return
        if outputs.size > SLICE_VALUES:  # one encoding would hold the loop too long
            self.restart()
            self._usable = False
            return
        if self._texts and self._values + outputs.size > SLICE_VALUES:
            self._parts.append(b",".join([*self._texts, b""]))  # ends with the next `,`
            self._texts, self._values = [], 0
        self._rows.append(outputs)
        self._texts.append(values_json(outputs)[1:-1])
        self._values += outputs.size

    def parts(self, values: Floats) -> list[bytes] | None:
        """`values` (T, U) as a JSON list's text in parts of about `SLICE_VALUES` values
        each, without its brackets, if the slices were exactly `values`; None otherwise
        (another computation's, or none at all): the answer is then encoded anew."""
        if not self._usable or not self._rows or values.ndim != 2:
            return None
        rows = self._rows[0] if len(self._rows) == 1 else np.concatenate(self._rows)
        if rows.shape != values.shape or rows.tobytes() != values.tobytes():
            return None
        return [*self._parts, b",".join(self._texts)]


async def answer_parts(
    heavy: HeavyWork,
    values: Floats,
    answer: Callable[[msgspec.Raw], bytes],
    encoded: EncodedRows | None = None,
) -> list[bytes]:
    """The JSON answer `answer(values as JSON)` as parts whose concatenation is it: for a
    large array, the answer's head, its values' slices (encoded in the heavy-work thread,
    or already by `encoded`) and its tail, never joined. A join, then msgspec copying the
    joined values into the answer, each held the interpreter lock for milliseconds per 9 MB
    answer."""
    ready = encoded.parts(values) if encoded is not None else None
    if ready is not None:
        head, tail = answer(_VALUES_HERE).split(b"\x00")
        if len(ready) == 1:  # one copy of the values into the answer, not three
            return [b"".join((head, b"[", ready[0], b"]", tail))]
        return [head + b"[", *ready[:-1], ready[-1] + b"]" + tail]
    if values.size <= SLICE_VALUES:
        return [answer(msgspec.Raw(values_json(values)))]
    return await heavy.call_sliced(_around(_encoding(values), answer))


# Where the values go in an answer: msgspec escapes a NUL in any string, so the only one in
# the answer's text is this.
_VALUES_HERE = msgspec.Raw(b"\x00")


def _encoding(values: Floats) -> Generator[None, None, list[bytes]]:
    """Slices of `values` as JSON, each but the last ending with the `,` before the next."""
    row = values.size // len(values)
    step = max(1, SLICE_VALUES // row)
    starts = range(0, len(values), step)
    parts = []
    for start in starts:
        last = start == starts[-1]
        part = _encoded(values[start : start + step], start == 0, last)
        parts.append(part if last else part + b",")
        yield
    return parts


def _around(
    encoding: Generator[None, None, list[bytes]], answer: Callable[[msgspec.Raw], bytes]
) -> Generator[None, None, list[bytes]]:
    parts = yield from encoding
    head, tail = answer(_VALUES_HERE).split(b"\x00")
    return [head, *parts, tail]

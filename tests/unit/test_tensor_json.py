"""Large JSON tensors in slices: the same arrays and the same errors as one ordinary decode,
the same values as one ordinary encode."""

import asyncio
import json

import numpy as np
import pytest

from service.api import tensor_json
from service.api.bodies import (
    PartsResponse,
    chunk_from_json,
    encoded,
    parts_answer,
    sequence_and_no_offset,
)
from service.api.tensor_json import answer_parts, decode_rows
from service.core.fairness import HeavyWork
from service.errors import InvalidInput


@pytest.fixture
def heavy():
    work = HeavyWork(per_key=2, total=4)
    yield work
    work.close()


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    monkeypatch.setattr(tensor_json, "SLICE_BYTES", 1000)  # many cuts in small bodies


def sliced(heavy, body: bytes, chunk: bool):
    ordinary = chunk_from_json if chunk else sequence_and_no_offset
    return asyncio.run(decode_rows(heavy, body, chunk, ordinary))


@pytest.mark.parametrize("steps", [1, 7, 400])
@pytest.mark.parametrize("indent", [None, 2])
@pytest.mark.parametrize("offset_first", [True, False])  # the two ways of finding the rows
def test_sliced_decoding_gives_the_bits_of_one_decode(heavy, steps, indent, offset_first):
    rng = np.random.default_rng(steps)
    values = rng.normal(size=(steps, 16)) * 10.0 ** rng.integers(-30, 30, size=(steps, 16))
    fields = {"offset": 3, "inputs": values.tolist()}
    if not offset_first:
        fields = {"inputs": fields["inputs"], "offset": 3}
    body = json.dumps(fields, indent=indent).encode() + b" \n"
    x, offset = sliced(heavy, body, chunk=True)
    reference = values.astype(np.float32)  # numpy's rounding, not the service's decoder
    assert offset == 3
    assert x.dtype == np.float32 and x.tobytes() == reference.tobytes()


BAD_BODIES = [
    b"not json",
    b'{"inputs": 5}',
    b'{"inputs": []}',
    b'{"inputs": [[1, 2], [3]]}',
    b'{"inputs": [[1, 2], [3, "a"]]}',
    b'{"inputs": [[1, 2]], "offset": -1}',
    b'{"inputs": [[1, 2]], "other": 1}',
    b'{"inputs": [["],["], [1, 2]]}',
    b'{"inputs": [[[1], [2]], [[3], [4]]]}',
    b'{"inputs": [[1, 2]], "offset": "1"}',
    b'{"inputs": [[1, 2]], "offset": 1',
    b'{"inputs": [[1, 2]]} [',
    b'{"inputs": [[1, 2]]]}',
    b'{"inputs": [[1, 2], [3, 4]}',
    b'{"inputs": [[1, 2]], "offset": 1, "x": [[1]]}',
    b'{"offset": 1, "inputs": "[[1, 2]]"}',
    json.dumps({"inputs": [[0.5] * 16] * 300 + [[0.5] * 15] + [[0.5] * 16] * 50}).encode(),
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
@pytest.mark.parametrize("chunk", [True, False])
def test_a_bad_body_gets_the_error_of_one_decode(heavy, body, chunk):
    ordinary = chunk_from_json if chunk else sequence_and_no_offset
    with pytest.raises(InvalidInput) as expected:
        ordinary(body)
    with pytest.raises(InvalidInput) as got:
        sliced(heavy, body, chunk)
    assert got.value.message == expected.value.message


@pytest.mark.parametrize("shape", [(5,), (10_000,), (3000, 8), (1, 1)])
def test_sliced_encoding_gives_the_values(heavy, monkeypatch, shape):
    monkeypatch.setattr(tensor_json, "SLICE_VALUES", 1000)
    values = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    parts = asyncio.run(answer_parts(heavy, values, lambda raw: encoded({"outputs": raw})))
    outputs = json.loads(b"".join(parts))["outputs"]
    assert np.array(outputs, np.float32).tobytes() == values.tobytes()


@pytest.mark.parametrize("shape", [(3000, 8), (10_000,), (1001, 1)])
def test_a_long_answer_is_sent_in_parts_that_hold_the_values(heavy, monkeypatch, shape):
    """Never joined into one buffer: one body message per slice, plus the answer's head
    and tail, with the whole length declared."""
    monkeypatch.setattr(tensor_json, "SLICE_VALUES", 1000)
    values = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    content = {"id": "a\x00b"}  # a NUL in a string must not split the answer
    sent = []

    async def send(message):
        sent.append(message)

    async def answer():
        parts = await answer_parts(heavy, values, lambda raw: encoded({**content, "v": raw}))
        response = parts_answer(parts)
        assert isinstance(response, PartsResponse)
        await response({"type": "http"}, None, send)

    asyncio.run(answer())
    bodies = [message["body"] for message in sent[1:]]
    rows_per_slice = 1000 // (values.size // len(values))  # whole rows, at most 1000 values
    assert len(bodies) == 2 + -(-len(values) // rows_per_slice)
    assert [message["more_body"] for message in sent[1:]] == [True] * (len(bodies) - 1) + [False]
    whole = b"".join(bodies)
    assert dict(sent[0]["headers"])[b"content-length"] == str(len(whole)).encode()
    assert json.loads(whole) == {**content, "v": values.tolist()}


def test_a_repeated_field_decodes_as_one_decode_does(heavy):
    body = b'{"inputs": [[1, 2]], "offset": 1, "inputs": [[3, 4]]}'  # the last one counts
    x, offset = sliced(heavy, body, chunk=True)
    assert x.tolist() == [[3.0, 4.0]] and offset == 1


def encoded_in_slices(values: np.ndarray, rows: int) -> tensor_json.EncodedRows:
    """What the heavy-work thread hands the loop: `values` slice by slice, in order."""
    sink = tensor_json.EncodedRows()
    sink.restart()
    for start in range(0, len(values), rows):
        sink.add(values[start : start + rows])
    return sink


@pytest.mark.parametrize(
    ("shape", "rows"), [((1000, 8), 256), ((3000, 8), 97), ((300, 8), 128), ((1, 3), 1)]
)
def test_outputs_encoded_as_they_come_answer_their_values(heavy, monkeypatch, shape, rows):
    # The slices' texts make the answer that one encoding of the whole outputs makes: past
    # 4096 values a long answer in parts, one body below.
    monkeypatch.setattr(tensor_json, "SLICE_VALUES", 4096)
    values = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    values[0, 0] = -0.0

    def answer(raw):
        return encoded({"id": "a\x00b", "v": raw})

    sink = encoded_in_slices(values, rows)
    assert sink.parts(values) is not None  # the slices' texts are what is answered
    parts = asyncio.run(answer_parts(heavy, values, answer, sink))
    whole = json.loads(b"".join(parts))
    assert whole == {"id": "a\x00b", "v": values.tolist()}
    assert np.array(whole["v"], np.float32).tobytes() == values.tobytes()
    assert (len(parts) == 1) == (values.size <= 4096)


def test_slices_of_another_computation_are_not_answered(heavy):
    # A compare-and-set lost after the runner ran: the slices are those of the first try,
    # the answer must hold the outputs of the one that was stored.
    values = np.random.default_rng(3).normal(size=(600, 8)).astype(np.float32)
    other = values.copy()
    other[599, 7] = np.nextafter(other[599, 7], np.float32(np.inf))
    for sink in (encoded_in_slices(other, 256), encoded_in_slices(values[:344], 256)):
        parts = asyncio.run(answer_parts(heavy, values, lambda raw: encoded({"v": raw}), sink))
        assert np.array(json.loads(b"".join(parts))["v"], np.float32).tobytes() == values.tobytes()
    restarted = encoded_in_slices(values, 256)
    restarted.restart()
    assert restarted.parts(values) is None

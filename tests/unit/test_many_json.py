"""`/v1/chunks` inputs parsed all at once: the same float32 bits as numpy's conversion of
the decoded JSON, and anything not proven to be chunks of equal-width rows of numbers left
to the ordinary decoding (None)."""

import json

import msgspec
import numpy as np
import pytest

from service.api.bodies import _MANY_CHUNKS, _RAW_CHUNKS, _valid_ids
from service.api.many_json import chunk_arrays


def raws(*texts: str) -> list[msgspec.Raw]:
    return [msgspec.Raw(text.encode()) for text in texts]


def reference(text: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.array(json.loads(text), dtype=np.float32)


def test_chunks_of_one_shape_and_of_many_are_each_numpys_conversion():
    rng = np.random.default_rng(4)
    same = [json.dumps(rng.normal(size=(1, 16)).tolist()) for _ in range(5)]
    mixed = [
        json.dumps(rng.normal(size=(3, 5)).tolist()),
        " [ [ 1 , 2E+2 ] ,\n [ -0 , 3.5e-1 ] ] ",  # whitespace, integers, exponents
        "[[1e39, 2], [0.1, 9007199254740993]]",  # beyond float32: infinite, not finite
        json.dumps(rng.normal(size=(1, 16)).tolist()),
    ]
    for texts in (same, mixed):
        got = chunk_arrays(raws(*texts))
        assert got is not None
        for array, finite, text in zip(*got, texts, strict=True):
            expected = reference(text)
            assert array.dtype == np.float32 and array.shape == expected.shape
            assert array.tobytes() == expected.tobytes()
            assert finite == bool(np.isfinite(expected).all())
    got = chunk_arrays(raws(*mixed))
    assert got is not None and got[1] == [True, True, False, True]


@pytest.mark.parametrize(
    "texts",
    [
        ("[[1,2],[3,4,5,6]]",),  # ragged: as many numbers as [[1,2,3],[4,5,6]]
        ("[[1,2,3]]", "[[1,2],[3,4,5,6]]"),
        ("[[1,[2]]]",),  # deeper than a row
        ("[1,2]",),  # no rows
        ("[[1,2],3]",),
        ("[]",),
        ("[[]]",),
        ("[[1,2],[]]",),
        ('[["1"]]',),
        ("[[true]]",),
        ("[[null, 1]]",),
        ("[[1e400]]",),  # a number simdjson refuses
        ("[[100000000000000000000000000]]",),
        ("{}",),
        ("3",),
    ],
)
def test_anything_but_equal_rows_of_numbers_is_left_to_the_ordinary_decoding(texts):
    assert chunk_arrays(raws("[[0.5]]", *texts)) is None


def test_an_empty_row_is_not_taken_for_a_one_value_row():
    # Without their numbers `[[3],[]]` and `[[3],[4]]` read alike: the count tells them apart.
    assert chunk_arrays(raws("[[1],[2]]", "[[3],[]]")) is None
    got = chunk_arrays(raws("[[1],[2]]", "[[3],[4]]"))
    assert got is not None
    assert [array.tolist() for array in got[0]] == [[[1.0], [2.0]], [[3.0], [4.0]]]


@pytest.mark.parametrize(
    "session_id",
    ["a", "A-1_b.c:d", "x" * 128, "x" * 129, ".a", "", "a b", "x\n", "a\nb", "é", "a\n\nb"],
)
def test_the_ids_checked_at_once_are_those_msgspec_accepts_one_by_one(session_id):
    body = json.dumps(
        {"chunks": [{"session_id": sid, "inputs": [[1]]} for sid in ("ok", session_id, "ok")]}
    )
    try:
        _MANY_CHUNKS.decode(body)
        accepted = True
    except msgspec.ValidationError:
        accepted = False
    assert _valid_ids([c.session_id for c in _RAW_CHUNKS.decode(body).chunks]) == accepted

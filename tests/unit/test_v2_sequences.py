"""Sequence ids to session ids: no collisions between kinds, models, or the native API."""

import re

from service.api.schemas import SESSION_ID_PATTERN
from service.core.sequences import describe, sequence_session_id

CASES = [
    ("m", 7),
    ("m", "7"),
    ("m", "i:7"),
    ("m:i", 7),
    ("m:s", "x"),
    ("m", "s:x"),
    ("m:x", "y"),
    ("m", "x:y"),
    ("n", 7),
]


def test_distinct_sequences_get_distinct_sessions():
    ids = [sequence_session_id(model, sequence) for model, sequence in CASES]
    assert len(set(ids)) == len(CASES)


def test_native_session_ids_can_never_name_a_sequence():
    for model, sequence in CASES:
        assert not re.fullmatch(SESSION_ID_PATTERN, sequence_session_id(model, sequence))


def test_describe_tells_integer_from_string_ids():
    assert describe(7) == "7"
    assert describe("7") == '"7"'

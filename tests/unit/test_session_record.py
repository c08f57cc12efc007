import numpy as np
import pytest

from service.core.session_record import (
    TOKEN_BYTES,
    SessionRecord,
    chunk_digest,
    chunk_digests,
    chunks_joined,
    encode_many,
    state_span,
    tokens_joined,
)
from service.errors import CorruptState


def record(**changes) -> SessionRecord:
    base = SessionRecord(
        incarnation=0xDEADBEEF01,
        revision=3,
        steps=17,
        created_ms=1_700_000_000_000,
        updated_ms=1_700_000_005_000,
        ttl_seconds=3600,
        model="sensor-lstm",
        model_version="9bfb46ea3c6aa186",
        state=np.arange(256, dtype=np.float32) / 7,
        last_offset=12,
        last_digest=bytes(range(16)),
        state_before_last=np.linspace(-1, 1, 256, dtype=np.float32),
    )
    return SessionRecord(**{**base.__dict__, **changes})


def test_round_trip_keeps_every_field_and_every_bit():
    original = record()
    decoded = SessionRecord.decode(original.encode())
    assert decoded.revision == 3 and decoded.steps == 17 and decoded.ttl_seconds == 3600
    assert (decoded.model, decoded.model_version) == ("sensor-lstm", "9bfb46ea3c6aa186")
    assert decoded.state.tobytes() == original.state.tobytes()
    assert decoded.state_before_last is not None and original.state_before_last is not None
    assert decoded.state_before_last.tobytes() == original.state_before_last.tobytes()
    assert (decoded.last_offset, decoded.last_digest) == (12, bytes(range(16)))
    assert (decoded.incarnation, decoded.ended) == (0xDEADBEEF01, False)
    assert SessionRecord.decode(record(ended=True).encode()).ended


def test_state_is_plain_little_endian_float32_after_the_header():
    blob = record().encode()
    assert blob[:4] == b"LSTS"
    expected = (np.arange(256, dtype=np.float32) / 7).astype("<f4").tobytes()
    assert expected in blob


def test_no_last_chunk_round_trips_without_a_state_before_it():
    fresh = record(last_offset=-1, state_before_last=None)
    decoded = SessionRecord.decode(fresh.encode())
    assert decoded.state_before_last is None and decoded.last_offset == -1
    assert len(fresh.encode()) == len(record().encode()) - 256 * 4


def test_a_record_is_its_header_and_twice_its_state_whatever_the_chunk_length():
    # The replay of the last chunk keeps the state before it, not its outputs: format 1
    # kept outputs, and a 10,000-step chunk made a 320 KB record.
    header = 24 + 28 + 2 + len("sensor-lstm") + 2 + 16 + 4 + 24
    assert len(record().encode()) == header + 2 * 256 * 4


def test_token_changes_with_every_write_including_a_reset_to_the_same_steps():
    first = record()
    reset = first.advanced(steps=17)
    assert reset.token != first.token
    assert len(first.token) == TOKEN_BYTES
    assert first.encode()[:TOKEN_BYTES] == first.token


def test_two_incarnations_at_the_same_revision_have_different_tokens():
    # A session deleted and created again starts at revision 0 again, like the first one.
    assert record(revision=0).token != record(revision=0, incarnation=7).token


def format_1_record() -> bytes:
    """A record as format 1 wrote it: 16-byte token, then the last chunk's outputs."""
    state = np.zeros(4, "<f4").tobytes()
    return (
        b"LSTS" + (1).to_bytes(2, "little") + bytes(2) + (5).to_bytes(8, "little")
        + bytes(28) + b"\x01\x00m\x01\x00v" + (4).to_bytes(4, "little") + state
        + (0).to_bytes(8, "little") + bytes(16) + b"\x01" + (1).to_bytes(4, "little") + bytes(4)
    )  # fmt: skip


def test_a_format_1_record_is_refused_by_name():
    with pytest.raises(CorruptState, match="format version 1"):
        SessionRecord.decode(format_1_record())


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + (99).to_bytes(2, "little") + b[6:],
        lambda b: b[:-3],
        lambda b: b + b"\x00",
        lambda b: b[:20],
    ],
    ids=["magic", "format-version", "truncated", "trailing", "header-only"],
)
def test_corrupt_records_are_refused_by_name(mangle):
    with pytest.raises(CorruptState):
        SessionRecord.decode(mangle(record().encode()))


def test_digest_depends_on_values_and_shape():
    x = np.arange(6, dtype=np.float32)
    assert chunk_digest(x.reshape(2, 3)) == chunk_digest(x.copy().reshape(2, 3))
    assert chunk_digest(x.reshape(2, 3)) != chunk_digest(x.reshape(3, 2))
    y = x.copy()
    y[5] = np.nextafter(y[5], np.float32(10))
    assert chunk_digest(x.reshape(2, 3)) != chunk_digest(y.reshape(2, 3))


def test_records_encoded_together_are_each_record_encoded_alone():
    rng = np.random.default_rng(7)
    records = [
        record(
            incarnation=2**64 - 1 - i,
            revision=i,
            steps=1000 + i,
            updated_ms=1_700_000_009_000 + i,
            last_offset=999 + i,
            last_digest=bytes([i + 1]) * 15 + b"\0",  # a trailing zero byte is kept
            state=rng.normal(size=256).astype(np.float32),
            state_before_last=rng.normal(size=256).astype(np.float32),
            ended=i == 2,
        )
        for i in range(5)
    ]
    states = np.array([r.state for r in records])
    before = np.array([r.state_before_last for r in records])
    blobs = encode_many(records, states, before)
    assert blobs == [r.encode() for r in records]
    for blob, original in zip(blobs, records, strict=True):
        decoded = SessionRecord.decode(blob)
        assert decoded.state.tobytes() == original.state.tobytes()
        assert (decoded.revision, decoded.ended) == (original.revision, original.ended)
    # Without the states before: each record's bytes up to them, which the store appends
    # from where `state_span` finds the state in the record each chunk ran from.
    heads = encode_many(records, states, None)
    for head, original in zip(heads, records, strict=True):
        full = original.encode()
        assert head + original.state_before_last.astype("<f4").tobytes() == full
        at, length = state_span(original)
        assert full[at : at + length] == original.state.astype("<f4").tobytes()


def test_tokens_made_together_are_each_records_token():
    records = [record(incarnation=2**64 - 1 - i, revision=i * 1000, ended=i == 1) for i in range(3)]
    assert tokens_joined(records) == b"".join(r.token for r in records)
    assert [r.token for r in records] == [r.encode()[:TOKEN_BYTES] for r in records]


def test_digests_of_a_batch_are_each_chunk_digested_alone():
    import hashlib
    import struct

    chunks = np.random.default_rng(3).normal(size=(6, 3, 16)).astype(np.float32)
    expected = [
        hashlib.blake2b(
            struct.pack("<II", 3, 16) + c.astype("<f4").tobytes(), digest_size=16
        ).digest()
        for c in chunks
    ]
    assert chunk_digests(chunks) == expected == [chunk_digest(c) for c in chunks]


def test_chunk_runs_made_from_the_bases_are_the_records_each_chunk_makes():
    rng = np.random.default_rng(11)
    bases = [
        record(
            incarnation=2**64 - 1 - i,
            revision=2**40 + i,
            steps=10**12 + 7 * i,
            created_ms=1_700_000_000_000 + i,
            ttl_seconds=60 + i,
            state=rng.normal(size=256).astype(np.float32),
            ended=i == 3,
        )
        for i in range(5)
    ]
    states = rng.normal(size=(5, 256)).astype(np.float32)
    x = rng.normal(size=(5, 3, 16)).astype(np.float32)
    digests = chunk_digests(x)
    tokens, values, ttl_ms = chunks_joined(bases, 3, 1_700_000_123_456, states, digests)
    made = [
        base.after_chunk(3, 1_700_000_123_456, state, digest)
        for base, state, digest in zip(bases, states, digests, strict=True)
    ]
    assert tokens == b"".join(base.token for base in bases)
    # Each record's bytes up to the state before its chunk (the store keeps that part).
    before_bytes = 256 * 4
    assert values == b"".join(after.encode()[:-before_bytes] for after in made)
    assert ttl_ms == [(60 + i) * 1000 for i in range(5)]
    decoded = SessionRecord.decode(values[: len(values) // 5] + bases[0].state.tobytes())
    assert (decoded.revision, decoded.steps, decoded.last_offset) == (2**40 + 1, 10**12 + 3, 10**12)

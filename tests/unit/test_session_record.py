import numpy as np
import pytest

from service.core.session_record import TOKEN_BYTES, SessionRecord, chunk_digest
from service.errors import CorruptState


def record(**changes) -> SessionRecord:
    base = SessionRecord(
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
        last_outputs=np.linspace(-1, 1, 40, dtype=np.float32).reshape(5, 8),
    )
    return SessionRecord(**{**base.__dict__, **changes})


def test_round_trip_keeps_every_field_and_every_bit():
    original = record()
    decoded = SessionRecord.decode(original.encode())
    assert decoded.revision == 3 and decoded.steps == 17 and decoded.ttl_seconds == 3600
    assert (decoded.model, decoded.model_version) == ("sensor-lstm", "9bfb46ea3c6aa186")
    assert decoded.state.tobytes() == original.state.tobytes()
    assert decoded.last_outputs is not None and original.last_outputs is not None
    assert decoded.last_outputs.tobytes() == original.last_outputs.tobytes()
    assert decoded.last_outputs.shape == (5, 8)
    assert (decoded.last_offset, decoded.last_digest) == (12, bytes(range(16)))


def test_state_is_plain_little_endian_float32_after_the_header():
    blob = record().encode()
    assert blob[:4] == b"LSTS"
    expected = (np.arange(256, dtype=np.float32) / 7).astype("<f4").tobytes()
    assert expected in blob


def test_last_step_outputs_and_no_last_chunk_round_trip():
    vector = record(last_outputs=np.array([1.5, -2.25], dtype=np.float32))
    decoded = SessionRecord.decode(vector.encode()).last_outputs
    assert decoded is not None and decoded.shape == (2,)
    fresh = SessionRecord.decode(record(last_offset=-1, last_outputs=None).encode())
    assert fresh.last_outputs is None and fresh.last_offset == -1


def test_token_changes_with_every_write_including_a_reset_to_the_same_steps():
    first = record()
    reset = first.advanced(steps=17)
    assert reset.token != first.token
    assert len(first.token) == TOKEN_BYTES
    assert first.encode()[:TOKEN_BYTES] == first.token


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

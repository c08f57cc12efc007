"""A session as explicit bytes: a fixed little-endian header, then the state and what a
replay of the last chunk needs (kept so that a retried chunk gets its first answer again).
Never pickle.

Layout, format 2 (all little-endian):
  magic "LSTS" | format u16 | flags u16 | incarnation u64 | revision u64   <- CAS token (24 bytes)
  steps u64 | created_ms u64 | updated_ms u64 | ttl_seconds u32
  model name (u16 length + utf-8) | model version (u16 length + ascii)
  state (u32 count + float32 values, in the model's declared layer order)
  last chunk: offset i64 (-1: none) | input digest 16 bytes |
              state before it (float32 values, as many as the state; absent when offset is -1)

`incarnation` is random per create and kept by every later write: a session deleted and
created again under the same id starts at revision 0 again, and only the incarnation tells
the two apart. Flag 1: the sequence has ended; the record is a short-lived tombstone that
only answers a replay of its last chunk.

Format 1 (until issue 15) had a 16-byte token without incarnation or flags, and kept the
last chunk's outputs instead of the state before it (a 10,000-step chunk of an 8-output
model made a 320 KB record); it is refused as `corrupt_state`, never misread.
"""

import functools
import hashlib
import struct
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from service.core.arrays import Floats
from service.errors import CorruptState

MAGIC = b"LSTS"
FORMAT_VERSION = 2
ENDED = 1
_TOKEN = struct.Struct("<4sHHQQ")
_FIXED = struct.Struct("<QQQI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_LAST = struct.Struct("<q16s")
# The token, the fixed fields and the model name's length: one pack and one unpack.
_HEAD = struct.Struct("<" + _TOKEN.format[1:] + _FIXED.format[1:] + "H")
_LAST_FLOATS = _LAST.size // 4  # the last chunk's fields, read as floats between the states
TOKEN_BYTES = _TOKEN.size
NO_DIGEST = bytes(16)
_SHAPE = struct.Struct("<II")
_F4 = np.dtype("<f4")  # made once: a dtype from its name costs more than the copy


def chunk_digest(inputs: Floats) -> bytes:
    data = _SHAPE.pack(*inputs.shape) + _f4_bytes(inputs)
    return hashlib.blake2b(data, digest_size=16).digest()


def chunk_digests(chunks: Floats) -> list[bytes]:
    """`chunk_digest` of each chunk of a (chunks, T, F) array: one conversion to bytes, and
    the hash of the shape made once, copied for each chunk."""
    shape = hashlib.blake2b(_SHAPE.pack(*chunks.shape[1:]), digest_size=16)
    data = memoryview(_f4_bytes(chunks))
    size = chunks[0].size * _F4.itemsize if len(chunks) else 0
    digests = []
    for row in range(len(chunks)):
        digest = shape.copy()
        digest.update(data[row * size : (row + 1) * size])
        digests.append(digest.digest())
    return digests


def _f4_bytes(values: Floats) -> bytes:
    # `tobytes` copies in C order whatever the layout; `astype` only converts when needed.
    return values.astype(_F4, copy=False).tobytes()


@dataclass(frozen=True)
class SessionRecord:
    incarnation: int
    revision: int
    steps: int
    created_ms: int
    updated_ms: int
    ttl_seconds: int
    model: str
    model_version: str
    state: Floats
    last_offset: int = -1
    last_digest: bytes = NO_DIGEST
    state_before_last: Floats | None = None
    ended: bool = False

    @property
    def token(self) -> bytes:
        """The prefix a compare-and-set checks: it changes on every write, reset included,
        and differs between incarnations of one session id."""
        flags = ENDED if self.ended else 0
        return _TOKEN.pack(MAGIC, FORMAT_VERSION, flags, self.incarnation, self.revision)

    def after_chunk(
        self, steps: int, updated_ms: int, state: Floats, digest: bytes
    ) -> "SessionRecord":
        """The record once a chunk of `steps` steps has run from its state: `advanced` with
        the fields a chunk changes, without its checks (a record per chunk)."""
        values = self.__dict__.copy()
        values["revision"] = self.revision + 1
        values["steps"] = self.steps + steps
        values["updated_ms"] = updated_ms
        values["state"] = state
        values["last_offset"] = self.steps
        values["last_digest"] = digest
        values["state_before_last"] = self.state
        return _made(values)

    def advanced(self, **changes: Any) -> "SessionRecord":
        if not changes.keys() <= _FIELDS:
            raise TypeError(f"not fields of a session record: {changes.keys() - _FIELDS}")
        return _made({**self.__dict__, **changes, "revision": self.revision + 1})

    def encode(self) -> bytes:
        name, names = _names(self.model, self.model_version, self.state.size)
        flags = ENDED if self.ended else 0
        parts = [
            _HEAD.pack(
                MAGIC,
                FORMAT_VERSION,
                flags,
                self.incarnation,
                self.revision,
                self.steps,
                self.created_ms,
                self.updated_ms,
                self.ttl_seconds,
                len(name),
            ),
            names,
            _f4_bytes(self.state),
            _LAST.pack(self.last_offset, self.last_digest),
        ]
        if self.last_offset >= 0:
            assert self.state_before_last is not None
            assert self.state_before_last.size == self.state.size
            parts.append(_f4_bytes(self.state_before_last))
        return b"".join(parts)

    @classmethod
    def decode(cls, blob: bytes) -> "SessionRecord":
        try:
            return cls._decode(memoryview(blob))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise CorruptState(f"session record cannot be decoded: {exc}") from exc

    @classmethod
    def _decode(cls, view: memoryview) -> "SessionRecord":
        magic, version = struct.unpack_from("<4sH", view, 0)
        if magic != MAGIC:
            raise ValueError("not a session record")
        if version != FORMAT_VERSION:
            raise ValueError(f"format version {version}, this build reads {FORMAT_VERSION}")
        (_, _, flags, incarnation, revision, steps, created_ms, updated_ms, ttl_seconds, n) = (
            _HEAD.unpack_from(view, 0)
        )
        pos = _HEAD.size
        model = bytes(view[pos : pos + n]).decode()
        pos += n
        (n,) = _U16.unpack_from(view, pos)
        model_version = bytes(view[pos + 2 : pos + 2 + n]).decode()
        pos += 2 + n
        (n,) = _U32.unpack_from(view, pos)
        pos += 4
        last_offset, last_digest = _LAST.unpack_from(view, pos + 4 * n)
        # One copy for the state, the last chunk's fields and the state before it: two
        # arrays from one conversion.
        before = None
        if last_offset >= 0:
            values = np.frombuffer(view, _F4, 2 * n + _LAST_FLOATS, pos).astype(np.float32)
            state, before = values[:n], values[n + _LAST_FLOATS :]
            end = pos + 4 * (2 * n + _LAST_FLOATS)
        else:
            state = np.frombuffer(view, _F4, n, pos).astype(np.float32)
            end = pos + 4 * n + _LAST.size
        if end != len(view):
            raise ValueError("trailing bytes after the last chunk")
        return _made(
            {
                "incarnation": incarnation,
                "revision": revision,
                "steps": steps,
                "created_ms": created_ms,
                "updated_ms": updated_ms,
                "ttl_seconds": ttl_seconds,
                "model": model,
                "model_version": model_version,
                "state": state,
                "last_offset": last_offset,
                "last_digest": last_digest,
                "state_before_last": before,
                "ended": bool(flags & ENDED),
            }
        )


_FIELDS = frozenset(field.name for field in fields(SessionRecord))


@functools.lru_cache(maxsize=256)
def _names(model: str, version: str, state_size: int) -> tuple[bytes, bytes]:
    """The model name, and what follows the fixed fields up to the state: the same for every
    record of one model version (a few served at once)."""
    name = model.encode()
    encoded_version = version.encode()
    return name, name + _U16.pack(len(encoded_version)) + encoded_version + _U32.pack(state_size)


def encode_many(
    records: list[SessionRecord], states: Floats, states_before: Floats | None
) -> list[bytes]:
    """`encode` of each record, for records of one model version that all keep a last
    chunk, given their states and states before it as (records, size) arrays. Without
    `states_before`, each record's bytes up to them (what `state_span` says the replaced
    record holds at the same place, when it is the one the chunk ran from)."""
    blob = encode_joined(records, states, states_before)
    size = len(blob) // len(records)
    return [blob[start : start + size] for start in range(0, len(blob), size)]


def encode_joined(
    records: list[SessionRecord], states: Floats, states_before: Floats | None
) -> bytes:
    """`encode_many`'s records back to back: the fields of all of them written column by
    column into one buffer (numpy)."""
    first = records[0]
    layout = _layout(first.model, first.model_version, first.state.size, states_before is not None)
    table = np.empty(len(records), layout)
    _fill_tokens(table, records)
    table["steps"] = [record.steps for record in records]
    table["created_ms"] = [record.created_ms for record in records]
    table["updated_ms"] = [record.updated_ms for record in records]
    table["ttl_seconds"] = [record.ttl_seconds for record in records]
    name, names = _names(first.model, first.model_version, first.state.size)
    table["name_length"] = len(name)
    table["names"] = names
    table["state"] = states
    table["last_offset"] = [record.last_offset for record in records]
    table["last_digest"] = [record.last_digest for record in records]
    if states_before is not None:
        table["state_before_last"] = states_before
    return table.tobytes()


def chunks_joined(
    bases: list[SessionRecord], steps: int, updated_ms: int, states: Floats, digests: list[bytes]
) -> tuple[bytes, bytes, list[int]]:
    """For the records `bases[i].after_chunk(steps, updated_ms, states[i], digests[i])` (of
    one model version): the bases' tokens as `tokens_joined` gives them, the new records'
    bytes as `encode_joined(..., None)` gives them, and each one's TTL in milliseconds.
    Made from the bases' columns (the new ones follow from them), without the new records."""
    first = bases[0]
    layout = _layout(first.model, first.model_version, first.state.size, False)
    tokens = np.empty(len(bases), _TOKENS)
    _fill_tokens(tokens, bases)
    table = np.empty(len(bases), layout)
    for field in _TOKEN_FIELDS:
        table[field] = tokens[field]
    table["revision"] += 1
    before = np.array([base.steps for base in bases], np.int64)
    table["steps"] = before + steps
    table["created_ms"] = [base.created_ms for base in bases]
    table["updated_ms"] = updated_ms
    ttl_seconds = np.array([base.ttl_seconds for base in bases], np.int64)
    table["ttl_seconds"] = ttl_seconds
    name, names = _names(first.model, first.model_version, first.state.size)
    table["name_length"] = len(name)
    table["names"] = names
    table["state"] = states
    table["last_offset"] = before
    table["last_digest"] = digests
    return tokens.tobytes(), table.tobytes(), (ttl_seconds * 1000).tolist()


_TOKENS = np.dtype(
    [
        ("magic", "S4"),
        ("format", "<u2"),
        ("flags", "<u2"),
        ("incarnation", "<u8"),
        ("revision", "<u8"),
    ]
)
_TOKEN_FIELDS: tuple[str, ...] = tuple(_TOKENS.fields or ())


def tokens_joined(records: list[SessionRecord]) -> bytes:
    """The `token` of each record, back to back, made column by column."""
    table = np.empty(len(records), _TOKENS)
    _fill_tokens(table, records)
    return table.tobytes()


def _fill_tokens(table: np.ndarray, records: list[SessionRecord]) -> None:
    """The token's columns (`_TOKENS`' fields) of a table of records."""
    table["magic"] = MAGIC
    table["format"] = FORMAT_VERSION
    table["flags"] = [ENDED if record.ended else 0 for record in records]
    table["incarnation"] = [record.incarnation for record in records]
    table["revision"] = [record.revision for record in records]


def state_span(record: SessionRecord) -> tuple[int, int]:
    """Where the record's state lies in its bytes: offset, length."""
    names = _names(record.model, record.model_version, record.state.size)[1]
    return _HEAD.size + len(names), record.state.size * _F4.itemsize


@functools.lru_cache(maxsize=256)
def _layout(model: str, version: str, state_size: int, with_before: bool) -> np.dtype[Any]:
    """A record with a last chunk as a packed numpy record type: the layout above, field by
    field (the name's length, then the constant middle as one byte string)."""
    names = _names(model, version, state_size)[1]
    before = [("state_before_last", "<f4", (state_size,))] if with_before else []
    return np.dtype(
        [
            *_TOKENS.descr,
            ("steps", "<u8"),
            ("created_ms", "<u8"),
            ("updated_ms", "<u8"),
            ("ttl_seconds", "<u4"),
            ("name_length", "<u2"),
            ("names", f"S{len(names)}"),
            ("state", "<f4", (state_size,)),
            ("last_offset", "<i8"),
            ("last_digest", "S16"),
            *before,
        ]
    )


def _made(values: dict[str, Any]) -> SessionRecord:
    """A record from all its fields. Not the dataclass's __init__: a frozen one sets each
    field through object.__setattr__ (~3.5 us for these 13), and a chunk makes two."""
    record = object.__new__(SessionRecord)
    object.__setattr__(record, "__dict__", values)  # `values` is the record's own, never shared
    return record

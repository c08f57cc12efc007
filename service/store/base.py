from collections.abc import Awaitable, Sequence
from enum import Enum
from typing import NamedTuple, Protocol


class CasOutcome(Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    MISSING = "missing"


class CasWrite(NamedTuple):  # a tuple: made 64 times per many-session request
    """The value written is `value`, then `kept_length` bytes of the value it replaces from
    byte `kept_at`: what the writer knows the store holds (its prefix is the one expected)
    need not be sent again."""

    session_id: str
    expected_prefix: bytes
    value: bytes
    ttl_ms: int
    kept_at: int = 0
    kept_length: int = 0


class CasWriteRun(NamedTuple):
    """Writes of equal shape as columns (one group of a many-session request, made
    together): write i is `CasWrite(session_ids[i], prefixes[i * P : (i + 1) * P],
    values[i * V : (i + 1) * V], ttl_ms[i], kept_at, kept_length)`, P and V the lengths of
    one prefix and one value. A store may send it as it is, without a tuple per write."""

    session_ids: Sequence[str]
    prefixes: bytes
    values: bytes
    ttl_ms: list[int]
    kept_at: int = 0
    kept_length: int = 0

    def writes(self) -> list[CasWrite]:
        count = len(self.session_ids)
        p, v = len(self.prefixes) // count, len(self.values) // count
        return [
            CasWrite(
                session_id,
                self.prefixes[i * p : (i + 1) * p],
                self.values[i * v : (i + 1) * v],
                ttl_ms,
                self.kept_at,
                self.kept_length,
            )
            for i, (session_id, ttl_ms) in enumerate(
                zip(self.session_ids, self.ttl_ms, strict=True)
            )
        ]


Writes = Sequence[CasWrite | CasWriteRun]


def session_ids_of(writes: Writes) -> list[str]:
    """The session of each write, runs expanded, in order (one outcome each)."""
    ids: list[str] = []
    for write in writes:
        if isinstance(write, CasWriteRun):
            ids += write.session_ids
        else:
            ids.append(write.session_id)
    return ids


def expanded(writes: Writes) -> list[CasWrite]:
    """Every write as a `CasWrite`, runs expanded, in order."""
    out: list[CasWrite] = []
    for write in writes:
        if isinstance(write, CasWriteRun):
            out += write.writes()
        else:
            out.append(write)
    return out


class StateStore(Protocol):
    """Opaque session values by namespace and session id (the store names its own keys),
    with expiry and a compare-and-set on a value's prefix.

    Values begin with a version token; `compare_and_set` replaces a value only while
    its stored prefix still equals `expected_prefix`, atomically.
    """

    async def get(self, namespace: str, session_id: str) -> bytes | None: ...

    async def create(self, namespace: str, session_id: str, value: bytes, ttl_ms: int) -> bool:
        """Store `value` unless the session exists; False when it does."""
        ...

    def compare_and_set(
        self, namespace: str, session_id: str, expected_prefix: bytes, value: bytes, ttl_ms: int
    ) -> Awaitable[CasOutcome]:
        """An awaitable: a coroutine, or a future already waiting for its write."""
        ...

    async def get_many(self, namespace: str, session_ids: list[str]) -> list[bytes | None]:
        """The values of several sessions in one round trip (not one snapshot of all)."""
        ...

    async def compare_and_set_many(self, namespace: str, writes: Writes) -> list[CasOutcome]:
        """`compare_and_set` for each write (a run's writes one by one), in one round trip;
        each is atomic on its own session, and their outcomes are independent, in order."""
        ...

    async def delete(self, namespace: str, session_id: str) -> bool: ...

    async def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot answer."""
        ...

    async def close(self) -> None: ...


class SessionIndex(Protocol):
    """Live sessions per namespace, kept beside the store to cap how many one key holds."""

    async def admit(
        self, namespace: str, session_id: str, expires_ms: int, now_ms: int, limit: int
    ) -> bool:
        """Count `session_id` in `namespace` unless `limit` live sessions are there already."""
        ...

    async def forget(self, namespace: str, session_id: str) -> None: ...

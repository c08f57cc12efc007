"""Round-trip times of store calls, by operation, for the one `Telemetry`."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from service.store.base import CasOutcome, StateStore, Writes
from service.telemetry import Telemetry


@contextmanager
def timed(telemetry: Telemetry, operation: str) -> Iterator[None]:
    """Report how long the block took (failures too) as one `operation` store call."""
    started = time.perf_counter()
    try:
        yield
    finally:
        telemetry.store_call(operation, time.perf_counter() - started)


class TimedStateStore:
    """Wraps a store; every `StateStore` call is timed, failures too."""

    def __init__(self, store: StateStore, telemetry: Telemetry) -> None:
        self.inner = store
        self._telemetry = telemetry

    async def get(self, namespace: str, session_id: str) -> bytes | None:
        with timed(self._telemetry, "get"):
            return await self.inner.get(namespace, session_id)

    async def create(self, namespace: str, session_id: str, value: bytes, ttl_ms: int) -> bool:
        with timed(self._telemetry, "create"):
            return await self.inner.create(namespace, session_id, value, ttl_ms)

    async def compare_and_set(
        self, namespace: str, session_id: str, expected_prefix: bytes, value: bytes, ttl_ms: int
    ) -> CasOutcome:
        with timed(self._telemetry, "compare_and_set"):
            return await self.inner.compare_and_set(
                namespace, session_id, expected_prefix, value, ttl_ms
            )

    async def get_many(self, namespace: str, session_ids: list[str]) -> list[bytes | None]:
        with timed(self._telemetry, "get_many"):
            return await self.inner.get_many(namespace, session_ids)

    async def compare_and_set_many(self, namespace: str, writes: Writes) -> list[CasOutcome]:
        with timed(self._telemetry, "compare_and_set_many"):
            return await self.inner.compare_and_set_many(namespace, writes)

    async def delete(self, namespace: str, session_id: str) -> bool:
        with timed(self._telemetry, "delete"):
            return await self.inner.delete(namespace, session_id)

    async def ping(self) -> None:
        with timed(self._telemetry, "ping"):
            await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

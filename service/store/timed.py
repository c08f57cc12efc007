"""A `StateStore` that reports each call's round-trip time, by operation."""

import time
from typing import Any

from service.store.base import CasOutcome, StateStore
from service.telemetry import Telemetry


class TimedStateStore:
    """Wraps a store; every `StateStore` call is timed (failures too). Other attributes
    (`client`, ...) pass through to the wrapped store untimed."""

    def __init__(self, store: StateStore, telemetry: Telemetry) -> None:
        self.inner = store
        self._telemetry = telemetry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, key: str) -> bytes | None:
        started = time.perf_counter()
        try:
            return await self.inner.get(key)
        finally:
            self._telemetry.store_call("get", time.perf_counter() - started)

    async def create(self, key: str, value: bytes, ttl_ms: int) -> bool:
        started = time.perf_counter()
        try:
            return await self.inner.create(key, value, ttl_ms)
        finally:
            self._telemetry.store_call("create", time.perf_counter() - started)

    async def compare_and_set(
        self, key: str, expected_prefix: bytes, value: bytes, ttl_ms: int
    ) -> CasOutcome:
        started = time.perf_counter()
        try:
            return await self.inner.compare_and_set(key, expected_prefix, value, ttl_ms)
        finally:
            self._telemetry.store_call("compare_and_set", time.perf_counter() - started)

    async def delete(self, key: str) -> bool:
        started = time.perf_counter()
        try:
            return await self.inner.delete(key)
        finally:
            self._telemetry.store_call("delete", time.perf_counter() - started)

    async def ping(self) -> None:
        started = time.perf_counter()
        try:
            await self.inner.ping()
        finally:
            self._telemetry.store_call("ping", time.perf_counter() - started)

    async def close(self) -> None:
        await self.inner.close()

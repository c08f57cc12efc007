"""Compare-and-sets issued in one event-loop turn share one Redis call, and each keeps its
own outcome: the reference is what Redis holds afterwards, read back key by key."""

import asyncio

import pytest

from service.errors import StoreUnavailable
from service.store.base import CasOutcome
from service.store.coalesced import CoalescedWrites
from service.store.embedded import free_port
from service.store.redis_store import RedisStateStore

TTL_MS = 60_000


def test_writes_of_one_turn_share_one_call_and_keep_their_own_outcomes(redis_server):
    async def run() -> tuple[list[CasOutcome], list[bytes | None], int]:
        inner = RedisStateStore.from_url(redis_server.url, 2.0)
        store = CoalescedWrites(inner)
        try:
            for name in ("win", "lose"):
                await inner.create("coalesce", name, b"old:" + name.encode(), TTL_MS)
            await inner.delete("coalesce", "gone")
            outcomes = await asyncio.gather(
                store.compare_and_set("coalesce", "win", b"old:", b"new:win", TTL_MS),
                store.compare_and_set("coalesce", "lose", b"stale:", b"new:lose", TTL_MS),
                store.compare_and_set("coalesce", "gone", b"old:", b"new:gone", TTL_MS),
            )
            # The same key twice in one turn: applied in the order issued.
            again = await asyncio.gather(
                store.compare_and_set("coalesce", "win", b"new:", b"next:win", TTL_MS),
                store.compare_and_set("coalesce", "win", b"new:", b"other:win", TTL_MS),
            )
            values = [await inner.get("coalesce", name) for name in ("win", "lose", "gone")]
            return [*outcomes, *again], values, store.calls
        finally:
            await store.close()

    outcomes, values, calls = asyncio.run(run())

    assert outcomes == [
        CasOutcome.APPLIED,
        CasOutcome.CONFLICT,
        CasOutcome.MISSING,
        CasOutcome.APPLIED,
        CasOutcome.CONFLICT,
    ]
    assert values == [b"next:win", b"old:lose", None]
    assert calls == 2


def test_writes_in_different_turns_or_namespaces_are_separate_calls(redis_server):
    async def run() -> tuple[list[CasOutcome], int]:
        inner = RedisStateStore.from_url(redis_server.url, 2.0)
        store = CoalescedWrites(inner)
        try:
            for namespace in ("ns-a", "ns-b"):
                await inner.create(namespace, "s", b"v1", TTL_MS)
            first = await store.compare_and_set("ns-a", "s", b"v1", b"v2", TTL_MS)
            both = await asyncio.gather(
                store.compare_and_set("ns-a", "s", b"v2", b"v3", TTL_MS),
                store.compare_and_set("ns-b", "s", b"v1", b"v2", TTL_MS),
            )
            return [first, *both], store.calls
        finally:
            await store.close()

    outcomes, calls = asyncio.run(run())

    assert outcomes == [CasOutcome.APPLIED] * 3
    assert calls == 3


def test_an_unreachable_store_fails_every_write_of_the_turn():
    async def run() -> list[BaseException | CasOutcome]:
        store = CoalescedWrites(RedisStateStore.from_url(f"redis://127.0.0.1:{free_port()}", 0.5))
        try:
            return await asyncio.gather(
                *(store.compare_and_set("ns", f"s{i}", b"t", b"v", TTL_MS) for i in range(3)),
                return_exceptions=True,
            )
        finally:
            await store.close()

    failures = asyncio.run(run())

    assert all(isinstance(failure, StoreUnavailable) for failure in failures)
    assert len({id(failure) for failure in failures}) == 3


def test_a_write_cancelled_before_its_turn_ends_is_not_sent(redis_server):
    async def run() -> bytes | None:
        inner = RedisStateStore.from_url(redis_server.url, 2.0)
        store = CoalescedWrites(inner)
        try:
            await inner.create("coalesce", "cancelled", b"v1", TTL_MS)
            # The call queues the write for the end of this turn and returns its future.
            write = store.compare_and_set("coalesce", "cancelled", b"v1", b"v2", TTL_MS)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            await asyncio.sleep(0.05)
            return await inner.get("coalesce", "cancelled")
        finally:
            await store.close()

    assert asyncio.run(run()) == b"v1"

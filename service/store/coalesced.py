"""Compare-and-sets issued in the same event-loop turn reach the store as one call.

Under load many sessions' chunks finish together (the micro-batcher answers a whole batch
at once) and each then writes its record. Sent one by one, every write costs a command to
encode, a socket write and a reply to parse; here those of one turn and one namespace go
as one `compare_and_set_many` (one script call on Redis). Each write keeps its own
compare-and-set and its own outcome, applied in the order they were issued: only the
round trip is shared. The writes of one turn wait for the end of that turn, no longer.
"""

import asyncio
from typing import NamedTuple

from service.errors import StoreUnavailable
from service.store.base import CasOutcome, CasWrite, StateStore, Writes


class _Pending(NamedTuple):  # a tuple: made once per chunk (a frozen dataclass costs ~4x)
    namespace: str
    write: CasWrite
    outcome: asyncio.Future[CasOutcome]


class CoalescedWrites:
    """Wraps a store; its `compare_and_set` calls of one loop turn share one store call."""

    def __init__(self, store: StateStore) -> None:
        self.inner = store
        self._pending: list[_Pending] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the pending writes' loop
        self._sending: set[asyncio.Task[None]] = set()
        self.calls = 0  # store calls made for `compare_and_set`, for tests and benchmarks

    def compare_and_set(
        self, namespace: str, session_id: str, expected_prefix: bytes, value: bytes, ttl_ms: int
    ) -> asyncio.Future[CasOutcome]:
        """The write's outcome, as a future the caller awaits directly (no coroutine frame
        to resume when it is set: this runs once per chunk)."""
        # The turn's first write asks for the loop (on Python 3.11 a `getpid` system call).
        loop = self._loop if self._pending else None
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            loop.call_soon(self._flush)
        outcome: asyncio.Future[CasOutcome] = loop.create_future()
        write = CasWrite(session_id, expected_prefix, value, ttl_ms)
        self._pending.append(_Pending(namespace, write, outcome))
        return outcome

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_namespace: dict[str, list[_Pending]] = {}
        for item in pending:
            if not item.outcome.done():  # a caller cancelled before the turn ended sends nothing
                by_namespace.setdefault(item.namespace, []).append(item)
        for namespace, items in by_namespace.items():
            task = asyncio.get_running_loop().create_task(self._send(namespace, items))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, namespace: str, items: list[_Pending]) -> None:
        self.calls += 1
        try:
            if len(items) == 1:
                one = items[0].write
                outcome = await self.inner.compare_and_set(
                    namespace, one.session_id, one.expected_prefix, one.value, one.ttl_ms
                )
                outcomes = [outcome]
            else:
                outcomes = await self.inner.compare_and_set_many(
                    namespace, [item.write for item in items]
                )
        except StoreUnavailable as exc:
            for item in items:  # one instance per waiter: each raises it with its own traceback
                if not item.outcome.done():
                    item.outcome.set_exception(StoreUnavailable(exc.message))
            return
        except Exception as exc:
            for item in items:
                if not item.outcome.done():
                    item.outcome.set_exception(exc)
            return
        except asyncio.CancelledError:
            for item in items:
                item.outcome.cancel()
            raise
        for item, outcome in zip(items, outcomes, strict=True):
            if not item.outcome.done():
                item.outcome.set_result(outcome)

    async def get(self, namespace: str, session_id: str) -> bytes | None:
        return await self.inner.get(namespace, session_id)

    async def create(self, namespace: str, session_id: str, value: bytes, ttl_ms: int) -> bool:
        return await self.inner.create(namespace, session_id, value, ttl_ms)

    async def get_many(self, namespace: str, session_ids: list[str]) -> list[bytes | None]:
        return await self.inner.get_many(namespace, session_ids)

    async def compare_and_set_many(self, namespace: str, writes: Writes) -> list[CasOutcome]:
        return await self.inner.compare_and_set_many(namespace, writes)

    async def delete(self, namespace: str, session_id: str) -> bool:
        return await self.inner.delete(namespace, session_id)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()

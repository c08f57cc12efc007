"""Per-key turns inside one process, so local writers to a session queue instead of racing."""

import asyncio
import contextlib
from collections import deque
from collections.abc import Hashable
from types import TracebackType


class _Entry:
    __slots__ = ("held", "users", "waiters")

    def __init__(self) -> None:
        self.held = False  # a caller has the turn
        self.users = 0  # having the turn, waiting for it, or gone ahead without it
        self.waiters: deque[asyncio.Future[None]] = deque()  # in arrival order


class KeyedLocks:
    """One FIFO turn per key, kept only while someone has or awaits it.

    An optimisation, never the guarantee: the store's compare-and-set still arbitrates
    between processes, and a caller that waits longer than `patience` goes ahead without
    its turn (so a request stuck on a slow store cannot hold the others past a bound).
    """

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._entries: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def turn(self, key: Hashable) -> "Turn":
        """Queues for `key`'s turn, at once: `turn.ready` when nobody else has or awaits it,
        else `await turn.wait()`; `turn.leave()` at the end, either way. Or `async with
        locks.turn(key) as acquired` (False when patience ran out first)."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        return Turn(self, key, entry)

    def _drop(self, key: Hashable, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._entries[key]


def _pass_on(entry: _Entry) -> None:
    """The turn to the first waiter still waiting, or to nobody."""
    while entry.waiters:
        waiter = entry.waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return
    entry.held = False


class Turn:
    """One caller's turn on one key. Taken without a coroutine when the key is free: the
    uncontended case runs once per chunk."""

    __slots__ = ("_entry", "_key", "_locks", "acquired", "ready")

    def __init__(self, locks: KeyedLocks, key: Hashable, entry: _Entry) -> None:
        self._locks = locks
        self._key = key
        self._entry = entry
        self.ready = self.acquired = not entry.held
        entry.held = True

    async def wait(self) -> bool:
        """Wait for the turn, at most `patience`; whether it came (else: go ahead anyway)."""
        entry = self._entry
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry.waiters.append(waiter)
        try:
            async with asyncio.timeout(self._locks.patience):
                await waiter
        except TimeoutError:
            # Handed over just as patience ran out: it is this caller's turn after all.
            self.acquired = waiter.done() and not waiter.cancelled()
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                _pass_on(entry)  # handed over, but this caller is gone
            self._forget(waiter)
            self._locks._drop(self._key, entry)
            raise
        else:
            self.acquired = True
        if not self.acquired:
            self._forget(waiter)
        self.ready = True
        return self.acquired

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._entry.waiters.remove(waiter)

    def leave(self) -> None:
        if self.acquired:
            _pass_on(self._entry)
        self._locks._drop(self._key, self._entry)

    async def __aenter__(self) -> bool:
        return self.acquired if self.ready else await self.wait()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.leave()

"""Per-key turns inside one process, so local writers to a session queue instead of racing."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class KeyedLocks:
    """One FIFO asyncio lock per key, kept only while someone holds or awaits it.

    An optimisation, never the guarantee: the store's compare-and-set still arbitrates
    between processes, and a caller that waits longer than `patience` goes ahead without
    its turn (so a request stuck on a slow store cannot hold the others past a bound).
    """

    def __init__(self, patience: float) -> None:
        self.patience = patience
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._users: Counter[Hashable] = Counter()

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[bool]:
        """Wait for `key`'s turn; yields False when patience ran out first."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] += 1
        try:
            acquired: bool
            try:
                acquired = await asyncio.wait_for(lock.acquire(), self.patience)
            except TimeoutError:
                acquired = False
            try:
                yield acquired
            finally:
                if acquired:
                    lock.release()
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

"""Per-key turns inside one process, so local writers to a session queue instead of racing."""

import asyncio
from collections.abc import Hashable
from types import TracebackType


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holding the lock, waiting for it, or gone ahead without it


class KeyedLocks:
    """One FIFO asyncio lock per key, kept only while someone holds or awaits it.

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
        """`async with locks.turn(key) as acquired`: waits for `key`'s turn; `acquired` is
        False when patience ran out first."""
        return Turn(self, key)

    def _enter(self, key: Hashable) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        return entry

    def _leave(self, key: Hashable, entry: _Entry) -> None:
        entry.users -= 1
        if not entry.users:
            del self._entries[key]


class Turn:
    """One caller's turn on one key (a class, not a generator: it runs once per chunk)."""

    __slots__ = ("_acquired", "_entry", "_key", "_locks")

    def __init__(self, locks: KeyedLocks, key: Hashable) -> None:
        self._locks = locks
        self._key = key
        self._acquired = False

    async def __aenter__(self) -> bool:
        entry = self._entry = self._locks._enter(self._key)
        if entry.users == 1:
            # Nobody else holds or awaits this key: the lock is free and takes no wait.
            await entry.lock.acquire()
            self._acquired = True
            return True
        try:
            async with asyncio.timeout(self._locks.patience):
                await entry.lock.acquire()
            self._acquired = True
        except TimeoutError:
            self._acquired = False
        except BaseException:
            self._locks._leave(self._key, entry)
            raise
        return self._acquired

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._acquired:
            self._entry.lock.release()
        self._locks._leave(self._key, self._entry)

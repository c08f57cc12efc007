"""The last record this process wrote or read for each recent session.

A chunk may start from it instead of reading the store, because the write that follows
is a compare-and-set against its token (revision and incarnation): if any other writer
(another replica, a reset, a delete and re-create) changed the session since, the write
is refused and the chunk is done again from a fresh read. So the answers are those of
always reading; only the round trip is saved, whenever the same process serves a
session's next chunk.
"""

from collections import OrderedDict, deque
from collections.abc import Sequence

from service.core.session_record import SessionRecord

Key = tuple[str, str]  # namespace, session id


class RecentRecords:
    """A bounded LRU map from (namespace, session id) to its decoded record."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Key, SessionRecord] = OrderedDict()

    def get(self, key: Key) -> SessionRecord | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, record: SessionRecord) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = record
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def peek_many(self, keys: Sequence[Key]) -> list[SessionRecord | None]:
        """`get` of each key without marking any as used (a caller that then `put`s or
        `forget`s them all), without a Python call per key."""
        return list(map(self._entries.get, keys))

    def put_many(self, keys: Sequence[Key], records: Sequence[SessionRecord]) -> None:
        """`put` of each key's record, in order, without a Python call per key."""
        if self.max_entries <= 0:
            return
        entries = self._entries
        entries.update(zip(keys, records, strict=True))
        deque(map(entries.move_to_end, keys), maxlen=0)  # `update` leaves known keys in place
        while len(entries) > self.max_entries:
            entries.popitem(last=False)

    def forget(self, key: Key) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

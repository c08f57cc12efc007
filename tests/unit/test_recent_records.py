"""The kept records' bulk calls do what the same calls one key at a time do."""

import numpy as np

from service.core.recent_records import RecentRecords
from service.core.session_record import SessionRecord


def _record(steps: int) -> SessionRecord:
    return SessionRecord(1, steps, steps, 0, 0, 60, "m", "v", np.zeros(2, np.float32))


def _keys(*names: str) -> list[tuple[str, str]]:
    return [("ns", name) for name in names]


def test_put_many_orders_and_evicts_as_puts_one_by_one():
    bulk, single = RecentRecords(4), RecentRecords(4)
    for recent in (bulk, single):
        for name in "abcd":
            recent.put(("ns", name), _record(0))
    keys, records = _keys("b", "e", "a"), [_record(1), _record(2), _record(3)]
    bulk.put_many(keys, records)
    for key, record in zip(keys, records, strict=True):
        single.put(key, record)
    # Known keys move to the newest end too: "c" and "d" are now the oldest, "c" evicted.
    for recent in (bulk, single):
        assert len(recent) == 4
        assert recent.get(("ns", "c")) is None
        assert [recent.peek_many(_keys(n))[0] for n in "bea"] == records
    bulk.put(("ns", "f"), _record(4))
    single.put(("ns", "f"), _record(4))
    assert bulk.peek_many(_keys("d", "b")) == single.peek_many(_keys("d", "b"))
    assert bulk.peek_many(_keys("d"))[0] is None  # "d" was the oldest


def test_peek_many_does_not_mark_keys_as_used():
    recent = RecentRecords(2)
    first, second = _record(1), _record(2)
    recent.put(("ns", "a"), first)
    recent.put(("ns", "b"), second)
    assert recent.peek_many(_keys("a", "x", "b")) == [first, None, second]
    recent.put(("ns", "c"), _record(3))  # "a" is still the oldest: evicted
    assert recent.peek_many(_keys("a", "b")) == [None, second]


def test_put_many_keeps_nothing_when_disabled():
    recent = RecentRecords(0)
    recent.put_many(_keys("a"), [_record(1)])
    assert len(recent) == 0

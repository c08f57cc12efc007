"""`RedisStateStore`'s many-key calls against a real Redis: one script call carries every
write packed in one argument, and each key's outcome is its own."""

import asyncio
import os
from typing import Any

import redis

from service.store.base import CasOutcome, CasWrite
from service.store.keys import session_key
from service.store.redis_store import RedisStateStore

NAMESPACE = "store-many"


def stored(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def run(url: str, call: Any) -> Any:
    async def scenario() -> Any:
        store = RedisStateStore.from_url(url, 2.0)
        try:
            return await call(store)
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_each_write_applies_or_not_on_its_own_key(redis_server):
    plain = stored(redis_server.url)
    token = os.urandom(24)
    values = {sid: token + os.urandom(n) for sid, n in (("a", 2135), ("b", 0), ("c", 7))}
    for sid, value in values.items():
        plain.set(session_key(NAMESPACE, sid), value)
    plain.set(session_key(NAMESPACE, "moved"), b"\x00" * 24 + b"other writer")
    plain.delete(session_key(NAMESPACE, "gone"))
    new = {sid: os.urandom(n) + b"\r\n$3\r\n\x00" for sid, n in (("a", 2159), ("b", 1), ("c", 0))}
    writes = [
        CasWrite("a", token, new["a"], 60_000),
        CasWrite("moved", token, b"never stored", 60_000),
        CasWrite("b", token, new["b"], 3_600_000),
        CasWrite("gone", token, b"never stored", 60_000),
        CasWrite("c", values["c"][:5], new["c"], 5_000_000_000),  # a shorter prefix, a long TTL
    ]

    outcomes = run(redis_server.url, lambda store: store.compare_and_set_many(NAMESPACE, writes))

    applied, conflict, missing = CasOutcome.APPLIED, CasOutcome.CONFLICT, CasOutcome.MISSING
    assert outcomes == [applied, conflict, applied, missing, applied]
    for sid, ttl_ms in (("a", 60_000), ("b", 3_600_000), ("c", 5_000_000_000)):
        key = session_key(NAMESPACE, sid)
        assert plain.get(key) == new[sid]
        assert ttl_ms - 10_000 < plain.pttl(key) <= ttl_ms
    assert plain.get(session_key(NAMESPACE, "moved")) == b"\x00" * 24 + b"other writer"
    assert plain.get(session_key(NAMESPACE, "gone")) is None


def test_a_write_expecting_the_old_prefix_loses_to_the_one_before_it(redis_server):
    plain = stored(redis_server.url)
    key = session_key(NAMESPACE, "twice")
    plain.set(key, b"old-token" + b"state")
    writes = [
        CasWrite("twice", b"old-token", b"new-token" + b"first", 60_000),
        CasWrite("twice", b"old-token", b"new-token" + b"second", 60_000),
    ]

    outcomes = run(redis_server.url, lambda store: store.compare_and_set_many(NAMESPACE, writes))

    assert outcomes == [CasOutcome.APPLIED, CasOutcome.CONFLICT]
    assert plain.get(key) == b"new-token" + b"first"

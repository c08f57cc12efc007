"""`RedisStateStore`'s many-key calls against a real Redis: one script call carries every
write packed in one argument, and each key's outcome is its own."""

import asyncio
import os
import signal
import time
from typing import Any

import redis

from service.errors import StoreUnavailable
from service.store.base import CasOutcome, CasWrite, CasWriteRun
from service.store.embedded import EmbeddedRedis
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


def test_the_writes_script_is_loaded_again_after_redis_forgot_it(redis_server):
    # A restarted Redis (or SCRIPT FLUSH) has no scripts: the call by hash is refused as
    # NOSCRIPT, and the store loads the script and applies the writes all the same.
    plain = stored(redis_server.url)
    key = session_key(NAMESPACE, "flushed")
    plain.set(key, b"token-1" + b"state")

    async def after_a_flush(store: RedisStateStore) -> Any:
        write = CasWrite("flushed", b"token-1", b"token-2" + b"state", 60_000)
        assert await store.compare_and_set_many(NAMESPACE, [write]) == [CasOutcome.APPLIED]
        plain.script_flush()
        write = CasWrite("flushed", b"token-2", b"token-3" + b"state", 60_000)
        return await store.compare_and_set_many(NAMESPACE, [write])

    assert run(redis_server.url, after_a_flush) == [CasOutcome.APPLIED]
    assert plain.get(key) == b"token-3" + b"state"


def test_many_values_are_read_in_key_order_bytes_as_stored(redis_server):
    plain = stored(redis_server.url)
    values = {"x": os.urandom(2159) + b"\r\n*2\r\n", "y": b"", "z": b"$-1\r\n"}
    for sid, value in values.items():
        plain.set(session_key(NAMESPACE, sid), value)
    plain.delete(session_key(NAMESPACE, "absent"))

    got = run(
        redis_server.url, lambda store: store.get_many(NAMESPACE, ["z", "absent", "x", "y", "x"])
    )

    assert got == [values["z"], None, values["x"], values["y"], values["x"]]


def test_a_kept_connection_the_server_closed_is_made_anew(redis_server):
    """The many-key calls keep their connections between calls: one Redis closed meanwhile
    (a restart, `timeout`, `CLIENT KILL`) is replaced before the next write, which cannot be
    retried once sent."""
    plain = stored(redis_server.url)
    token = os.urandom(24)
    key = session_key(NAMESPACE, "kept-connection")
    plain.set(key, token + b"first")

    name = f"store-many-{os.getpid()}"  # only this store's connections are closed

    async def scenario(store: RedisStateStore) -> list[list[CasOutcome]]:
        first = await store.compare_and_set_many(
            NAMESPACE, [CasWrite("kept-connection", token, token + b"second", 60_000)]
        )
        ours = [client["id"] for client in plain.client_list() if client["name"] == name]
        assert ours
        for client_id in ours:
            plain.client_kill_filter(_id=client_id)
        await asyncio.sleep(0.05)
        second = await store.compare_and_set_many(
            NAMESPACE, [CasWrite("kept-connection", token, token + b"third", 60_000)]
        )
        return [first, second]

    separator = "&" if "?" in redis_server.url else "?"
    outcomes = run(f"{redis_server.url}{separator}client_name={name}", scenario)

    assert outcomes == [[CasOutcome.APPLIED], [CasOutcome.APPLIED]]
    assert plain.get(key) == token + b"third"


def test_pooled_connections_the_server_closed_are_made_anew_before_a_write(redis_server):
    """The same for the pool's connections (creates, one-key compare-and-sets, deletes):
    redis-py checks a pooled connection before use only with its maintenance notifications
    off, which the store turns off."""
    plain = stored(redis_server.url)
    name = f"store-pool-{os.getpid()}"
    token = os.urandom(24)

    async def scenario(store: RedisStateStore) -> list[Any]:
        # Several pooled connections, then every one of them closed by Redis.
        await asyncio.gather(*(store.get(NAMESPACE, f"pool-{n}") for n in range(4)))
        for client in plain.client_list():
            if client["name"] == name:
                plain.client_kill_filter(_id=client["id"])
        await asyncio.sleep(0.05)
        created = await store.create(NAMESPACE, "pool-a", token + b"first", 60_000)
        swapped = await store.compare_and_set(NAMESPACE, "pool-a", token, token + b"next", 60_000)
        deleted = await store.delete(NAMESPACE, "pool-a")
        return [created, swapped, deleted]

    separator = "&" if "?" in redis_server.url else "?"
    outcomes = run(f"{redis_server.url}{separator}client_name={name}", scenario)

    assert outcomes == [True, CasOutcome.APPLIED, True]


def test_a_write_keeps_the_bytes_it_names_of_the_value_it_replaces(redis_server):
    # The many-session route sends a record without the state before its chunk, which the
    # value it replaces holds: the store appends those bytes, taken from the value the
    # expected prefix matched, and refuses a write naming bytes beyond it.
    plain = stored(redis_server.url)
    token, state = os.urandom(24), os.urandom(1024)
    for sid in ("kept", "short"):
        plain.set(session_key(NAMESPACE, sid), token + b"head" + state + b"tail")
    writes = [
        CasWrite("kept", token, b"new-token" + b"new state", 60_000, 28, 1024),
        # The second write of one key keeps bytes of the first's value, in order.
        CasWrite("kept", b"new-token", b"third-token", 60_000, 9, 3),
        CasWrite("short", token, b"never stored", 60_000, 28, 1029),
    ]

    outcomes = run(redis_server.url, lambda store: store.compare_and_set_many(NAMESPACE, writes))

    assert outcomes == [CasOutcome.APPLIED, CasOutcome.APPLIED, CasOutcome.CONFLICT]
    assert plain.get(session_key(NAMESPACE, "kept")) == b"third-token" + b"new"
    assert plain.get(session_key(NAMESPACE, "short")) == token + b"head" + state + b"tail"


def test_a_run_of_writes_applies_as_its_writes_one_by_one(redis_server):
    # `CasWriteRun` (a many-session request's group, as columns) between plain writes: the
    # same outcomes, in the same order, and the same stored bytes as its writes one by one.
    plain = stored(redis_server.url)
    token, moved = os.urandom(24), os.urandom(24)

    def fresh_values() -> None:
        for sid in ("r0", "r1", "r2", "r3", "before", "after"):
            plain.set(session_key(NAMESPACE, sid), token + os.urandom(4) + bytes(range(200)))
        plain.set(session_key(NAMESPACE, "r1"), moved + bytes(204))
        plain.delete(session_key(NAMESPACE, "r2"))

    ids = ["r0", "r1", "r2", "r3"]
    run_ = CasWriteRun(
        ids,
        token * 4,
        b"".join(os.urandom(24) + bytes([n]) * 40 for n in range(4)),
        [60_000, 70_000, 80_000, 5_000_000_000],
        kept_at=40,
        kept_length=100,
    )
    before = CasWrite("before", token, b"b" * 30, 60_000)
    after = CasWrite("after", token, b"a" * 30, 60_000, 28, 10)
    fresh_values()
    # The run's writes one by one, each written by hand here (not by `CasWriteRun.writes`).
    one_by_one = [before]
    for n, sid in enumerate(ids):
        value = run_.values[n * 64 : (n + 1) * 64]
        one_by_one.append(CasWrite(sid, token, value, run_.ttl_ms[n], 40, 100))
    one_by_one.append(after)
    expected_outcomes = run(
        redis_server.url, lambda store: store.compare_and_set_many(NAMESPACE, one_by_one)
    )
    expected = {sid: plain.get(session_key(NAMESPACE, sid)) for sid in [*ids, "before", "after"]}
    ttls = {sid: plain.pttl(session_key(NAMESPACE, sid)) for sid in ids}

    fresh_values()
    outcomes = run(
        redis_server.url,
        lambda store: store.compare_and_set_many(NAMESPACE, [before, run_, after]),
    )

    applied, conflict, missing = CasOutcome.APPLIED, CasOutcome.CONFLICT, CasOutcome.MISSING
    assert outcomes == expected_outcomes == [applied, applied, conflict, missing, applied, applied]
    for sid, value in expected.items():
        assert plain.get(session_key(NAMESPACE, sid)) == value
    for sid in ("r0", "r3"):
        assert abs(plain.pttl(session_key(NAMESPACE, sid)) - ttls[sid]) < 10_000
    assert run_.writes() == one_by_one[1:-1]


def test_concurrent_many_key_calls_keep_their_connections_for_the_next_ones(tmp_path):
    # A gateway sends many `/v1/chunks` requests at once: each round of concurrent calls
    # reuses the connections of the round before (opening one costs ~1 ms of CPU). A Redis
    # of this test's own counts every connection made to it.
    with EmbeddedRedis(tmp_path) as own:
        plain = stored(own.url)
        sessions = [f"spare-{n}" for n in range(32)]
        for sid in sessions:
            plain.set(session_key(NAMESPACE, sid), b"value")

        def connections_made() -> int:
            return int(plain.info("stats")["total_connections_received"])

        async def scenario(store: RedisStateStore) -> list[int]:
            made = []
            for _ in range(3):
                before = connections_made()
                await asyncio.gather(*(store.get_many(NAMESPACE, [sid]) for sid in sessions))
                made.append(connections_made() - before)
            return made

        made = run(own.url, scenario)

    assert 1 < made[0] <= len(sessions)  # the calls ran at once, on several connections
    assert made[1:] == [0, 0]


def test_a_write_to_a_hung_redis_fails_within_the_timeout_and_the_next_one_applies(tmp_path):
    # Redis stopped (SIGSTOP) while a many-key write is sent: its socket buffers fill (the
    # write is larger than they hold), the write is given up after the socket timeout as the
    # service's 503, and its connection dropped: once Redis runs again, the next call goes
    # on a fresh connection and is not confused by the lost call's late reply.
    sessions = [f"hung-{n}" for n in range(64)]
    value = os.urandom(256 * 1024)
    with EmbeddedRedis(tmp_path) as own:
        plain = stored(own.url)
        for sid in sessions:
            plain.set(session_key(NAMESPACE, sid), b"token-0")
        writes = [CasWrite(sid, b"token-0", b"token-1" + value, 60_000) for sid in sessions]
        pid = own._process.pid  # type: ignore[union-attr]

        async def scenario() -> tuple[str, float, list[CasOutcome]]:
            store = RedisStateStore.from_url(own.url, 0.5)
            try:
                await store.get_many(NAMESPACE, sessions[:1])  # a kept connection to use
                os.kill(pid, signal.SIGSTOP)
                started = time.perf_counter()
                try:
                    await store.compare_and_set_many(NAMESPACE, writes)
                    error = "none"
                except StoreUnavailable as exc:
                    error = type(exc).__name__
                waited = time.perf_counter() - started
                os.kill(pid, signal.SIGCONT)
                retry = [CasWrite(sid, b"token-0", b"token-2", 60_000) for sid in sessions[:2]]
                return error, waited, await store.compare_and_set_many(NAMESPACE, retry)
            finally:
                os.kill(pid, signal.SIGCONT)
                await store.close()

        error, waited, outcomes = asyncio.run(scenario())
        stored_values = {plain.get(session_key(NAMESPACE, sid)) for sid in sessions[:2]}

    assert error == "StoreUnavailable"
    assert waited < 5.0  # the 0.5 s timeout, not a hang
    # The lost write is never half applied: each key holds one whole value or the other.
    assert outcomes in (
        [CasOutcome.APPLIED, CasOutcome.APPLIED],
        [CasOutcome.CONFLICT, CasOutcome.CONFLICT],
    )
    assert stored_values <= {b"token-2", b"token-1" + value}

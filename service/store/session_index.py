"""How many live sessions each namespace (API key) holds, for the per-key session limit."""

from collections.abc import Awaitable
from typing import Any, TypeVar

from service.store.keys import namespace_index_key, session_key
from service.store.redis_errors import unavailable_on_redis_errors
from service.store.timed import timed
from service.telemetry import NULL_TELEMETRY, Telemetry

# One key: drop the entries still lapsed, then add the session if there is room.
_ADMIT_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
return 1
"""
# Lapsed entries are checked against their session keys this many per pipeline.
CHECK_BATCH = 500

T = TypeVar("T")


def _text(member: Any) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


class RedisSessionIndex:
    """Per namespace, a sorted set of session id -> expiry time (ms).

    Sessions expire without notice and every write pushes their expiry forward, so the
    recorded expiry is a lower bound: before a new session is counted, entries whose
    recorded expiry has passed are checked against their session key (PTTL) and either
    moved to the real expiry or dropped. A session is checked at most about once per TTL,
    and only when a session is created: never on the per-chunk path.

    Every command touches a single key, so this is safe on Redis Cluster, where a
    namespace's session keys live on many slots.
    """

    def __init__(self, client: Any, telemetry: Telemetry = NULL_TELEMETRY) -> None:
        self._client = client
        self._admit = client.register_script(_ADMIT_SCRIPT)
        self._telemetry = telemetry

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        with timed(self._telemetry, operation):
            return await call

    @unavailable_on_redis_errors
    async def admit(
        self, namespace: str, session_id: str, expires_ms: int, now_ms: int, limit: int
    ) -> bool:
        index = namespace_index_key(namespace)
        await self._move_lapsed(namespace, index, now_ms)
        admitted = await self._timed(
            "index_admit", self._admit(keys=[index], args=[now_ms, limit, expires_ms, session_id])
        )
        return bool(admitted)

    async def _move_lapsed(self, namespace: str, index: str, now_ms: int) -> None:
        lapsed = [
            _text(member)
            for member in await self._timed(
                "index_scan", self._client.zrangebyscore(index, "-inf", now_ms)
            )
        ]
        for start in range(0, len(lapsed), CHECK_BATCH):
            batch = lapsed[start : start + CHECK_BATCH]
            pipe = self._client.pipeline(transaction=False)
            for session_id in batch:
                pipe.pttl(session_key(namespace, session_id))
            ttls = await self._timed("index_check", pipe.execute())
            alive = {
                sid: now_ms + int(ttl) for sid, ttl in zip(batch, ttls, strict=True) if ttl > 0
            }
            if alive:
                # XX: a session deleted meanwhile is not put back.
                await self._timed("index_update", self._client.zadd(index, alive, xx=True))

    @unavailable_on_redis_errors
    async def forget(self, namespace: str, session_id: str) -> None:
        await self._timed(
            "index_forget", self._client.zrem(namespace_index_key(namespace), session_id)
        )

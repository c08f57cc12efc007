import asyncio
import functools
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from service.store.base import CasOutcome, CasWriteRun, Writes, expanded, session_ids_of
from service.store.keys import session_key, session_keys
from service.store.redis_errors import unavailable_on_redis_errors

# Returns 0 when the key is gone, 1 when its prefix moved on, 2 when replaced. The value
# written is ARGV[2], then ARGV[5] bytes of the value replaced from byte ARGV[4] (optional:
# `CasWrite.kept_at`, `kept_length`).
_CAS_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if string.sub(current, 1, string.len(ARGV[1])) ~= ARGV[1] then return 1 end
local value = ARGV[2]
local kept_length = tonumber(ARGV[5] or '0')
if kept_length > 0 then
  local kept_at = tonumber(ARGV[4])
  if string.len(current) < kept_at + kept_length then return 1 end
  value = value .. string.sub(current, kept_at + 1, kept_at + kept_length)
end
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return 2
"""
_CAS_OUTCOMES = {0: CasOutcome.MISSING, 1: CasOutcome.CONFLICT, 2: CasOutcome.APPLIED}
_CAS_DIGITS = {ord(str(n)): outcome for n, outcome in _CAS_OUTCOMES.items()}
# The same for every key, its writes packed into ARGV[1] (`_packed_writes`): one argument
# to encode instead of three per key (several µs a key). Per key, in KEYS order: expected
# prefix length u32, value length u32, kept from u32, kept length u32, TTL ms f64, the
# prefix, the value. The outcomes come back as one string, a digit per key.
_CAS_MANY_SCRIPT = """
local packed = ARGV[1]
local pos = 1
local outcomes = {}
for i, key in ipairs(KEYS) do
  local prefix_len, value_len, kept_at, kept_length, ttl_ms
  prefix_len, value_len, kept_at, kept_length, ttl_ms, pos =
    struct.unpack('<I4I4I4I4d', packed, pos)
  local expected = string.sub(packed, pos, pos + prefix_len - 1)
  local value = string.sub(packed, pos + prefix_len, pos + prefix_len + value_len - 1)
  pos = pos + prefix_len + value_len
  local current = redis.call('GET', key)
  if not current then
    outcomes[i] = '0'
  elseif string.sub(current, 1, prefix_len) ~= expected
      or string.len(current) < kept_at + kept_length then
    outcomes[i] = '1'
  else
    if kept_length > 0 then
      value = value .. string.sub(current, kept_at + 1, kept_at + kept_length)
    end
    redis.call('SET', key, value, 'PX', string.format('%d', ttl_ms))
    outcomes[i] = '2'
  end
end
return table.concat(outcomes)
"""
_WRITE_HEADER = struct.Struct("<IIIId")
# Connections `_send` keeps between calls (as many are open as calls run at once). Beyond
# them each call opens a connection and closes it after (~1 ms of CPU each in redis-py):
# enough for a gateway's concurrent many-session requests and the coalesced writes.
_SPARE_CONNECTIONS = 64
# A URL with one of these schemes names a Redis Cluster (seed node); redis-py wants the plain one.
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def parse_redis_url(url: str) -> tuple[str, bool]:
    """The URL for redis-py, and whether it names a cluster (`redis+cluster://host:port`)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _CLUSTER_SCHEMES:
        return f"{_CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, False


def _command(*args: bytes) -> list[bytes]:
    """A command in Redis's wire form (RESP), in parts: a large argument is not copied."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return parts


def _packed_writes(writes: Writes) -> bytes:
    pack = _WRITE_HEADER.pack
    parts = []
    for w in writes:
        if isinstance(w, CasWriteRun):
            parts.append(_packed_run(w))
        else:
            head = pack(len(w.expected_prefix), len(w.value), w.kept_at, w.kept_length, w.ttl_ms)
            parts += (head, w.expected_prefix, w.value)
    return b"".join(parts)


def _packed_run(run: CasWriteRun) -> bytes:
    """A run's writes packed as `_packed_writes` packs each, column by column (numpy)."""
    count = len(run.session_ids)
    prefix, value = len(run.prefixes) // count, len(run.values) // count
    table = np.empty(count, _run_layout(prefix, value))
    table["lengths"] = (prefix, value, run.kept_at, run.kept_length)
    table["ttl_ms"] = run.ttl_ms
    table["prefix"] = np.frombuffer(run.prefixes, f"V{prefix}")
    table["value"] = np.frombuffer(run.values, f"V{value}")
    return table.tobytes()


@functools.lru_cache(maxsize=64)
def _run_layout(prefix: int, value: int) -> np.dtype[Any]:
    """`_WRITE_HEADER`, then the prefix and the value, packed."""
    return np.dtype(
        [
            ("lengths", "<u4", (4,)),
            ("ttl_ms", "<f8"),
            ("prefix", f"V{prefix}"),
            ("value", f"V{value}"),
        ]
    )


def _cas_many_command(sha: bytes, keys: list[str], packed: bytes) -> list[bytes]:
    """`EVALSHA sha len(keys) *keys packed` in wire form (`_command`), a key in one part."""
    head = b"*%d\r\n$7\r\nEVALSHA\r\n$%d\r\n%s\r\n" % (len(keys) + 4, len(sha), sha)
    count = b"%d" % len(keys)
    names = [key.encode() for key in keys]
    return [
        head + b"$%d\r\n%s\r\n" % (len(count), count),
        b"".join([b"$%d\r\n%s\r\n" % (len(name), name) for name in names]),
        b"$%d\r\n" % len(packed),
        packed,
        b"\r\n",
    ]


async def _write(connection: Any, command: list[bytes]) -> None:
    """`connection.send_packed_command(command)`, sent at once: with a socket timeout,
    redis-py sends through `asyncio.wait_for`, which on Python 3.11 makes a task and sends a
    loop turn later (~15 µs of CPU per call). Only a full send buffer is waited for, within
    the socket timeout. On any failure the connection is dropped, as redis-py drops it: a
    command half sent must never be followed by another."""
    writer = getattr(connection, "_writer", None)  # redis-py's asyncio stream writer
    if writer is None:  # not connected, or a redis-py that names it otherwise
        await connection.send_packed_command(command)
        return
    try:
        writer.writelines(command)
        if writer.transport.get_write_buffer_size():
            async with asyncio.timeout(connection.socket_timeout):
                await writer.drain()
    except BaseException as exc:
        await connection.disconnect(nowait=True)
        if isinstance(exc, TimeoutError):
            raise RedisTimeoutError("Timeout writing to socket") from None
        if isinstance(exc, OSError):
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        raise


class RedisStateStore:
    """The state store on Redis (single node or Cluster), one key per session."""

    def __init__(self, client: Any) -> None:
        self._client = client
        # Asked once: `isinstance` against redis-py's cluster class goes through `typing`'s
        # protocol check, once per write call otherwise.
        self._cluster = isinstance(client, RedisCluster)
        self._cas = client.register_script(_CAS_SCRIPT)
        self._cas_many = client.register_script(_CAS_MANY_SCRIPT)
        self._cas_many_sha = self._cas_many.sha.encode()
        self._spare: list[Any] = []  # idle connections for `_send`

    async def _send(self, command: list[bytes]) -> Any:
        """One command already in wire form, on a connection of this store's own, made as
        redis-py makes its pool's (auth, database, timeouts): `execute_command` and the
        pool's checkout cost more than the round trip for these many-key commands
        (measured, 64 keys: 375 against ~140 µs of CPU for the compare-and-sets)."""
        pool = self._client.connection_pool
        connection = self._spare.pop() if self._spare else pool.make_connection()
        try:
            # Not closed by Redis since its last call (a restart, `timeout`, `CLIENT KILL`):
            # a write sent on a dead connection fails, and is not retried (it cannot be known
            # not to have been applied). The pool's check, without its exception for
            # maintenance notifications: nothing is ever left unread on these connections.
            if connection.is_connected and await connection.can_read():
                await connection.disconnect()
            if not connection.is_connected:
                await connection.connect()
            await _write(connection, command)
            # On any failure, cancellation included, the connection disconnects itself
            # first: it never goes back with a reply still to come.
            return await connection.read_response()
        finally:
            if len(self._spare) < _SPARE_CONNECTIONS:
                self._spare.append(connection)
            else:
                await connection.disconnect()

    @classmethod
    def from_url(cls, url: str, timeout_seconds: float, cluster: bool = False) -> "RedisStateStore":
        url, names_cluster = parse_redis_url(url)
        options: dict[str, Any] = {
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            # redis-py never resends a command by itself: a write whose reply was lost may
            # have been applied, and resending would also stretch the timeout bound.
            "retry": Retry(NoBackoff(), 0),
            # With them on ("auto", the default, counts as on), the pool hands out a
            # connection Redis has closed (a restart, `timeout`, `CLIENT KILL`) unchecked,
            # and the write sent on it fails: 503 for a request that needed none.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        if cluster or names_cluster:
            return cls(RedisCluster.from_url(url, **options))
        return cls(aioredis.Redis.from_url(url, health_check_interval=30, **options))

    @property
    def client(self) -> Any:
        return self._client

    async def _read(self, command: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        # Pooled connections from before a Redis restart fail on first use; a read is safe
        # to send again, and the idle ones are dropped so the next write gets a fresh one.
        try:
            return await command(*args)
        except RedisConnectionError:
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect(inuse_connections=False)
            return await command(*args)

    async def _script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """`script(keys=keys, args=args)` as one EVALSHA: redis-py's script object imports
        a module and checks the client's type on every call; it is used only to load the
        script when Redis lacks it."""
        try:
            return await self._client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=keys, args=args)

    @unavailable_on_redis_errors
    async def get(self, namespace: str, session_id: str) -> bytes | None:
        value = await self._read(self._client.get, session_key(namespace, session_id))
        return bytes(value) if value is not None else None

    @unavailable_on_redis_errors
    async def create(self, namespace: str, session_id: str, value: bytes, ttl_ms: int) -> bool:
        key = session_key(namespace, session_id)
        return bool(await self._client.set(key, value, px=ttl_ms, nx=True))

    @unavailable_on_redis_errors
    async def compare_and_set(
        self, namespace: str, session_id: str, expected_prefix: bytes, value: bytes, ttl_ms: int
    ) -> CasOutcome:
        key = session_key(namespace, session_id)
        result = await self._script(self._cas, [key], [expected_prefix, value, ttl_ms])
        return _CAS_OUTCOMES[int(result)]

    @unavailable_on_redis_errors
    async def get_many(self, namespace: str, session_ids: list[str]) -> list[bytes | None]:
        keys = session_keys(namespace, session_ids)
        if self._cluster:
            values = await self._read(self._client.mget_nonatomic, keys)  # one per slot
        else:
            names = [key.encode() for key in keys]
            values = await self._read(self._send, _command(b"MGET", *names))
        return [bytes(value) if value is not None else None for value in values]

    @unavailable_on_redis_errors
    async def compare_and_set_many(self, namespace: str, writes: Writes) -> list[CasOutcome]:
        keys = session_keys(namespace, session_ids_of(writes))
        if not self._cluster:
            # One script call for every key, its writes packed into one argument, and still
            # one round trip.
            packed = _packed_writes(writes)
            command = _cas_many_command(self._cas_many_sha, keys, packed)
            try:
                digits = await self._send(command)
            except NoScriptError:  # a restarted Redis: the script call loads it again
                digits = await self._cas_many(keys=keys, args=[packed])
            return [_CAS_DIGITS[digit] for digit in digits]
        # Keys live in different slots: one call per key, pipelined (EVAL with the script's
        # text: a cluster pipeline cannot load scripts for EVALSHA).
        pipe = self._client.pipeline(transaction=False)
        for key, w in zip(keys, expanded(writes), strict=True):
            args = (w.expected_prefix, w.value, w.ttl_ms, w.kept_at, w.kept_length)
            pipe.eval(_CAS_SCRIPT, 1, key, *args)
        results = await pipe.execute()
        return [_CAS_OUTCOMES[int(result)] for result in results]

    @unavailable_on_redis_errors
    async def delete(self, namespace: str, session_id: str) -> bool:
        return bool(await self._client.delete(session_key(namespace, session_id)))

    @unavailable_on_redis_errors
    async def ping(self) -> None:
        if not self._cluster:
            await self._read(self._client.ping)
            return
        # A plain cluster PING asks one node; every master holds sessions, so ask each.
        await self._client.initialize()
        for node in self._client.get_primaries():
            await self._client.ping(target_nodes=node)

    async def close(self) -> None:
        spare, self._spare = self._spare, []
        for connection in spare:
            await connection.disconnect()
        await self._client.aclose()

"""Session logic: create, stream chunks exactly once, reset, delete. State lives in the store."""

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import numpy as np

from service.core.arrays import Floats
from service.core.batcher import MicroBatcher
from service.core.fairness import (
    THREAD_OFFLOAD_STEPS,
    HeavyWork,
    OutputSink,
    check_tensor_bytes,
)
from service.core.inputs import as_rows, check_chunk
from service.core.keyed_locks import KeyedLocks
from service.core.models import ServedModel
from service.core.recent_records import RecentRecords
from service.core.repository import ModelRegistry
from service.core.session_record import NO_DIGEST, SessionRecord, chunk_digest
from service.errors import (
    InvalidInput,
    ModelVersionMismatch,
    OffsetConflict,
    ServiceError,
    SessionBusy,
    SessionExists,
    SessionNotFound,
    StoreUnavailable,
    TooManySessions,
)
from service.settings import Settings
from service.store.base import CasOutcome, SessionIndex, StateStore
from service.telemetry import NULL_TELEMETRY, Telemetry

# Writers racing on one session retry after a random pause (`backoff_seconds`), this many times.
MAX_WRITE_ATTEMPTS = 100
BACKOFF_BASE_SECONDS = 0.002
BACKOFF_CAP_SECONDS = 0.2
# Writers to one session in one process take turns (no wasted CAS rounds); past this
# wait a writer goes ahead anyway and the CAS arbitrates, so a stuck store holds no queue.
TURN_PATIENCE_SECONDS = 1.0
# An ended V2 sequence stays this long as a tombstone that answers a retry of its last chunk.
ENDED_SEQUENCE_SECONDS = 60

T = TypeVar("T")


class ChunkResult(NamedTuple):  # a tuple: made once per chunk, cheaper than a frozen dataclass
    record: SessionRecord
    offset: int
    outputs: Floats
    replayed: bool


@dataclass(frozen=True)
class Readiness:
    redis: str  # "ok" or why Redis does not answer
    models_loaded: int

    @property
    def ready(self) -> bool:
        return self.redis == "ok" and self.models_loaded > 0


def _setting(name: str) -> int:
    default: int = Settings.model_fields[name].default
    return default


@dataclass(frozen=True)
class SessionLimits:
    """The `Settings` that bound sessions; its defaults are theirs."""

    default_ttl_seconds: int = _setting("session_ttl_seconds")
    max_ttl_seconds: int = _setting("max_session_ttl_seconds")
    max_chunk_steps: int = _setting("max_chunk_steps")
    max_predict_steps: int = _setting("max_predict_steps")
    max_sessions_per_namespace: int = _setting("max_sessions_per_key")
    recent_records: int = _setting("recent_records")
    max_heavy_per_namespace: int = _setting("max_heavy_per_key")
    max_heavy_total: int = _setting("max_heavy_total")
    heavy_work_nice: int = _setting("heavy_work_nice")
    max_tensor_bytes: int = _setting("max_tensor_bytes")

    @classmethod
    def from_settings(cls, settings: Settings) -> "SessionLimits":
        return cls(
            default_ttl_seconds=settings.session_ttl_seconds,
            max_ttl_seconds=settings.max_session_ttl_seconds,
            max_chunk_steps=settings.max_chunk_steps,
            max_predict_steps=settings.max_predict_steps,
            max_sessions_per_namespace=settings.max_sessions_per_key,
            recent_records=settings.recent_records,
            max_heavy_per_namespace=settings.max_heavy_per_key,
            max_heavy_total=settings.max_heavy_total,
            heavy_work_nice=settings.heavy_work_nice,
            max_tensor_bytes=settings.max_tensor_bytes,
        )


def backoff_seconds(attempt: int) -> float:
    """Full jitter over a window that doubles per lost race, so that many racers spread out
    instead of colliding again and again in a small fixed window."""
    return random.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_model(
    model: ServedModel,
    x: Floats,
    state: Floats,
    telemetry: Telemetry,
    heavy: tuple[HeavyWork, str],
    sink: OutputSink | None = None,
) -> tuple[Floats, Floats]:
    if x.shape[0] > THREAD_OFFLOAD_STEPS:
        work, namespace = heavy
        started = time.perf_counter()
        outputs, states = await work.run(namespace, model.runner, x[None], state[None], sink)
        telemetry.model_ran(model.name, x.shape[0], time.perf_counter() - started)
        return outputs[0], states[0]
    return _timed_step(model, x, state, telemetry)


async def run_batch(
    model: ServedModel, x: Floats, telemetry: Telemetry, heavy: tuple[HeavyWork, str]
) -> Floats:
    """Every row of the (B, T, F) batch from zero state."""
    timesteps = x.shape[0] * x.shape[1]
    started = time.perf_counter()
    states = np.tile(model.runner.initial_state(), (x.shape[0], 1))
    if timesteps > THREAD_OFFLOAD_STEPS:
        work, namespace = heavy
        outputs, _ = await work.run(namespace, model.runner, x, states)
    else:
        outputs, _ = model.runner.step_batch(x, states)
    telemetry.model_ran(model.name, timesteps, time.perf_counter() - started)
    return outputs


def _timed_step(
    model: ServedModel, x: Floats, state: Floats, telemetry: Telemetry
) -> tuple[Floats, Floats]:
    started = time.perf_counter()
    result = model.runner.step(x, state)
    telemetry.model_ran(model.name, x.shape[0], time.perf_counter() - started)
    return result


class _ReadAgain(Exception):
    """The record this process kept cannot decide the answer: read the stored one."""


class SessionService:
    """The one data plane every transport (native HTTP, V2) calls into."""

    def __init__(
        self,
        store: StateStore,
        models: ModelRegistry,
        limits: SessionLimits,
        clock: Callable[[], int] = _now_ms,
        telemetry: Telemetry = NULL_TELEMETRY,
        index: SessionIndex | None = None,
        batcher: MicroBatcher | None = None,
    ) -> None:
        self.store = store
        self.models = models
        self.limits = limits
        self._clock = clock
        self.telemetry = telemetry
        self.index = index
        self.batcher = batcher
        self._in_flight = 0  # chunk and predict requests in progress in this process
        self._writers = KeyedLocks(TURN_PATIENCE_SECONDS)
        self.recent = RecentRecords(limits.recent_records)
        self.heavy = HeavyWork(
            limits.max_heavy_per_namespace, limits.max_heavy_total, nice=limits.heavy_work_nice
        )

    def now_ms(self) -> int:
        return self._clock()

    def model(self, name: str, version: int | str | None = None) -> ServedModel:
        return self.models.get(name, version)

    async def readiness(self) -> Readiness:
        try:
            await self.store.ping()
            redis = "ok"
        except StoreUnavailable as exc:
            redis = exc.message
        return Readiness(redis, len(self.models.all()))

    def check(
        self, model: ServedModel, x: Floats, max_steps: int, finite: bool | None = None
    ) -> None:
        """`check_chunk`, and the memory its tensors would take."""
        check_chunk(model, x, max_steps, finite)
        batch, steps = (1, x.shape[0]) if x.ndim == 2 else x.shape[:2]
        check_tensor_bytes(model.runner, batch, steps, self.limits.max_tensor_bytes)

    async def predict_stateless(
        self, namespace: str, model: ServedModel, x: Floats, sink: OutputSink | None = None
    ) -> Floats:
        """A (T, F) sequence or a (B, T, F) batch from zero state: row b equals a one-row
        call on `x[b]`, and every chunking of a session, bit for bit. `sink`: as `predict`'s,
        for a sequence."""
        x = as_rows(model, x)
        self.check(model, x, self.limits.max_predict_steps)
        with self.counted():
            if x.ndim == 2:
                state = model.runner.initial_state()
                outputs, _ = await self._run(namespace, model, x, state, sink)
                return outputs
            return await run_batch(model, x, self.telemetry, (self.heavy, namespace))

    def _run(
        self,
        namespace: str,
        model: ServedModel,
        x: Floats,
        state: Floats,
        sink: OutputSink | None = None,
    ) -> Awaitable[tuple[Floats, Floats]]:
        """The chunk's outputs and new state, to await; in a batch, the batcher's future
        itself (awaited with no coroutine of this module in between, once per chunk)."""
        # A lone request has nobody to share a batch with: waiting a loop turn for
        # company only adds latency (measured: 1-session p50 2.2 ms alone, 5.2 ms batched).
        batcher = self.batcher
        if (
            batcher is not None
            and x.shape[0] <= THREAD_OFFLOAD_STEPS
            and self._in_flight >= 2
            and batcher.worth_waiting(model.runner, x)
        ):
            return batcher.step(model.runner, x, state, model.name)
        return run_model(model, x, state, self.telemetry, (self.heavy, namespace), sink)

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def create(
        self,
        namespace: str,
        model_name: str,
        session_id: str | None = None,
        ttl_seconds: int | None = None,
        version: int | None = None,
    ) -> tuple[str, SessionRecord]:
        model = self.models.get(model_name, version)
        ttl = ttl_seconds or self.limits.default_ttl_seconds
        if ttl > self.limits.max_ttl_seconds:
            raise InvalidInput(
                f"ttl_seconds {ttl} exceeds the limit of {self.limits.max_ttl_seconds}",
                max_ttl_seconds=self.limits.max_ttl_seconds,
            )
        sid = session_id or secrets.token_urlsafe(18)
        now = self._clock()
        record = SessionRecord(
            incarnation=secrets.randbits(64),
            revision=0,
            steps=0,
            created_ms=now,
            updated_ms=now,
            ttl_seconds=ttl,
            model=model.name,
            model_version=model.version,
            state=model.runner.initial_state(),
        )
        if not await self.store.create(namespace, sid, record.encode(), ttl * 1000):
            raise SessionExists(sid)
        self.recent.put((namespace, sid), record)
        await self._admit(namespace, sid, now + ttl * 1000)
        self.telemetry.session_event("created")
        return sid, record

    async def _admit(self, namespace: str, session_id: str, expires_ms: int) -> None:
        """Count the new session against its namespace's limit, or take it back."""
        limit = self.limits.max_sessions_per_namespace
        if self.index is None or limit <= 0:
            return
        try:
            admitted = await self.index.admit(
                namespace, session_id, expires_ms, self._clock(), limit
            )
        except Exception:
            with contextlib.suppress(StoreUnavailable):
                await self.store.delete(namespace, session_id)
            raise
        if not admitted:
            await self.store.delete(namespace, session_id)
            raise TooManySessions(limit)

    async def get(self, namespace: str, session_id: str) -> SessionRecord:
        blob = await self.store.get(namespace, session_id)
        if blob is None:
            raise SessionNotFound(session_id)
        return SessionRecord.decode(blob)

    def model_for(self, record: SessionRecord, session_id: str) -> ServedModel:
        """The version the session is pinned to, while it is served."""
        model = self.models.find(record.model, record.model_version)
        if model is None:
            latest = self.models.get(record.model)
            raise ModelVersionMismatch(
                session_id, record.model, record.model_version, latest.version
            )
        return model

    async def predict(
        self,
        namespace: str,
        session_id: str,
        x: Floats,
        offset: int | None = None,
        known: SessionRecord | None = None,
        sink: OutputSink | None = None,
    ) -> ChunkResult:
        """Apply the (T, F) chunk `x` (or a binary body's flat values) at the session's
        step, exactly once (see `offset`). `known`: the record as this caller last saw it
        stored (a stream's previous answer), tried first instead of reading it; the
        compare-and-set catches a stale one. `sink`: takes the outputs of a long chunk
        slice by slice while they are computed (`HeavyWork.run`)."""

        async def advance(
            record: SessionRecord, fresh: bool
        ) -> tuple[SessionRecord | None, ChunkResult]:
            model = self.model_for(record, session_id)
            rows = as_rows(model, x)
            self.check(model, rows, self.limits.max_chunk_steps)
            if record.ended or (offset is not None and offset != record.steps):
                if not fresh:  # a replay or a conflict is decided on a record just read
                    raise _ReadAgain
                return None, await self._replay(
                    namespace, model, record, session_id, offset, rows, sink
                )
            run = self._run(namespace, model, rows, record.state, sink)
            if rows.shape[0] > THREAD_OFFLOAD_STEPS:
                # Digested on the loop while the heavy-work thread computes (the kernel and
                # blake2b both let go of the interpreter lock), not after it: ~0.08 ms per
                # 1000 x 16 chunk off the request's wall time.
                running = asyncio.ensure_future(run)
                try:
                    await asyncio.sleep(0)  # the task hands its first slice to the thread
                    digest = chunk_digest(rows)
                    outputs, state = await running
                except BaseException:
                    running.cancel()  # a request cancelled before it awaited the task
                    raise
            else:
                outputs, state = await run
                digest = chunk_digest(rows)
            updated = record.after_chunk(rows.shape[0], self._clock(), state, digest)
            return updated, ChunkResult(updated, record.steps, outputs, replayed=False)

        self._in_flight += 1  # `counted()` inline: this runs once per chunk
        try:
            return await self._write(namespace, session_id, advance, known)
        finally:
            self._in_flight -= 1

    async def _replay(
        self,
        namespace: str,
        model: ServedModel,
        record: SessionRecord,
        session_id: str,
        offset: int | None,
        x: Floats,
        sink: OutputSink | None = None,
    ) -> ChunkResult:
        """The last chunk again: recomputed from the state before it (the runner is
        deterministic, so the outputs are the first answer's bits); else a conflict."""
        before = record.state_before_last
        if (
            offset is not None
            and offset == record.last_offset
            and before is not None
            and chunk_digest(x) == record.last_digest
        ):
            outputs, _ = await self._run(namespace, model, x, before, sink)
            return ChunkResult(record, offset, outputs, replayed=True)
        if record.ended:
            raise SessionNotFound(session_id)
        assert offset is not None
        raise OffsetConflict.for_session(offset, record.steps, session_id)

    async def reset(
        self, namespace: str, session_id: str, version: int | None = None
    ) -> SessionRecord:
        """Back to zero state and step 0, on the latest version or the one asked for."""

        async def restart(
            record: SessionRecord, fresh: bool
        ) -> tuple[SessionRecord, SessionRecord]:
            model = self.models.get(record.model, version)
            updated = record.advanced(
                steps=0,
                updated_ms=self._clock(),
                model_version=model.version,
                state=model.runner.initial_state(),
                last_offset=-1,
                last_digest=NO_DIGEST,
                state_before_last=None,
                ended=False,
                # An ended sequence started again lives as long as a new one.
                ttl_seconds=self.limits.default_ttl_seconds if record.ended else record.ttl_seconds,
            )
            return updated, updated

        updated = await self._write(namespace, session_id, restart)
        self.telemetry.session_event("reset")
        return updated

    async def end(self, namespace: str, session_id: str) -> None:
        """End a sequence: its record becomes a short-lived tombstone that answers only a
        retry of its last chunk, so the chunk that ended it can be resent."""

        async def close(record: SessionRecord, fresh: bool) -> tuple[SessionRecord | None, None]:
            if record.ended:
                return None, None
            return record.advanced(ended=True, ttl_seconds=ENDED_SEQUENCE_SECONDS), None

        await self._write(namespace, session_id, close)

    async def _write(
        self,
        namespace: str,
        session_id: str,
        update: Callable[[SessionRecord, bool], Awaitable[tuple[SessionRecord | None, T]]],
        known: SessionRecord | None = None,
    ) -> T:
        """The one compare-and-set loop: read the record, let `update` compute the next one
        (or answer without writing: None), write it only if nobody else wrote meanwhile.
        The first attempt starts from the record this process last read or wrote, or from
        `known`; an answer without a write (a replay, a conflict) is only given from a
        record just read, never from a remembered one."""
        key = (namespace, session_id)
        incarnation = None  # the session this request is for, once a read has named it
        began_ms = self._clock()
        turn = self._writers.turn(key)  # no coroutine to enter when the session is free
        if not turn.ready:
            await turn.wait()
        try:
            for attempt in range(MAX_WRITE_ATTEMPTS):
                cached = self._remembered(key, known) if attempt == 0 else None
                if cached is None:
                    blob = await self.store.get(namespace, session_id)
                    if blob is None:
                        self.recent.forget(key)
                        raise SessionNotFound(session_id)
                    record = SessionRecord.decode(blob)
                    self.recent.put(key, record)
                else:
                    record = cached
                if cached is None:  # a kept record may be stale: only a read names the session
                    if incarnation is None:
                        if attempt > 0 and record.created_ms > began_ms:
                            # The kept record lost its race to a session created since this
                            # request began (by the replicas' millisecond clocks): the
                            # request was for the one before, which is gone.
                            raise SessionNotFound(session_id)
                        incarnation = record.incarnation
                    elif record.incarnation != incarnation:
                        # Deleted and created again meanwhile: this request was for the old one.
                        raise SessionNotFound(session_id)
                try:
                    updated, answer = await update(record, cached is None)
                except (ServiceError, _ReadAgain):
                    if cached is None:
                        raise
                    self.recent.forget(key)  # decided on a record that may be stale
                    continue
                if updated is None:
                    if cached is None:
                        return answer
                    self.recent.forget(key)
                    continue
                try:
                    outcome = await self.store.compare_and_set(
                        namespace,
                        session_id,
                        record.token,
                        updated.encode(),
                        updated.ttl_seconds * 1000,
                    )
                except StoreUnavailable:
                    self.recent.forget(key)  # the write may land later: read next time
                    raise
                if outcome is CasOutcome.APPLIED:
                    self.recent.put(key, updated)
                    return answer
                self.recent.forget(key)
                if outcome is CasOutcome.MISSING:
                    raise SessionNotFound(session_id)
                if cached is None:
                    await asyncio.sleep(backoff_seconds(attempt))
        finally:
            turn.leave()
        raise SessionBusy.for_session(session_id)

    def _remembered(
        self, key: tuple[str, str], known: SessionRecord | None
    ) -> SessionRecord | None:
        return self.recent.get(key) or known

    async def delete(self, namespace: str, session_id: str) -> None:
        self.recent.forget((namespace, session_id))
        if not await self.store.delete(namespace, session_id):
            raise SessionNotFound(session_id)
        if self.index is not None and self.limits.max_sessions_per_namespace > 0:
            # The session is gone either way; a stale entry is dropped at the next create.
            with contextlib.suppress(StoreUnavailable):
                await self.index.forget(namespace, session_id)
        self.telemetry.session_event("deleted")

"""Many sessions' chunks in one request: at most one store read, one runner call per model
and chunk length, one pipelined round of compare-and-sets. Each chunk keeps the single
route's guarantees (applied once, replays, offset conflicts, untouched state on bad input),
and the chunks of one session apply in request order, as if sent one after another.

As on the single route, a session starts from the record this process last wrote or read
(`RecentRecords`) when it has one: the compare-and-set against its token refuses a stale
one, and the session is then read and done again. Only what a kept record cannot decide
(a replay, a conflict, an error) sends that session to be read first."""

import asyncio
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from service.core.arrays import Floats
from service.core.fairness import INLINE_BATCH_STEPS, THREAD_OFFLOAD_STEPS
from service.core.models import ServedModel
from service.core.session_record import (
    SessionRecord,
    chunk_digest,
    chunk_digests,
    encode_many,
    state_span,
)
from service.core.sessions import (
    MAX_WRITE_ATTEMPTS,
    ChunkResult,
    SessionService,
    backoff_seconds,
)
from service.errors import OffsetConflict, ServiceError, SessionBusy, SessionNotFound
from service.store.base import CasOutcome, CasWrite

Outcome = ChunkResult | ServiceError


class ChunkItem(NamedTuple):  # a tuple: cheaper to make than a frozen dataclass
    session_id: str
    x: Floats  # (T, F) float32
    offset: int | None = None
    finite: bool | None = None  # whether every value of x is finite, when already known


@dataclass(eq=False, slots=True)
class _Session:
    """One session's items in this request, folded over its record in request order."""

    session_id: str
    items: list[int]
    base: SessionRecord | None = None
    fresh: bool = False  # `base` was just read, not kept from an earlier request
    stale: bool = False  # a kept record could not decide an item: read, then fold again
    incarnation: int | None = None  # the session this request is for, once a read named it
    record: SessionRecord | None = None
    model: ServedModel | None = None
    next_item: int = 0
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    encoded: tuple[SessionRecord, bytes] | None = None  # a record and its bytes, made together


@dataclass(slots=True)
class _Step:
    session: _Session
    item: int
    x: Floats
    digest: bytes | None = None
    replay_from: Floats | None = None  # the state before the last chunk, when resent


async def predict_many(
    sessions: SessionService, namespace: str, items: list[ChunkItem]
) -> list[ChunkResult | ServiceError]:
    """Each item's answer or error, in request order."""
    with sessions.counted():
        return await _ManyChunks(sessions, namespace).run(items)


def _answered(outcomes: list[Outcome | None]) -> list[Outcome]:
    assert None not in outcomes
    return outcomes  # type: ignore[return-value]


class _ManyChunks:
    def __init__(self, sessions: SessionService, namespace: str) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.namespace = namespace
        self._checked: dict[tuple[int, tuple[int, ...], bool], ServiceError | None] = {}
        self._models: dict[tuple[str, str], ServedModel] = {}  # by a record's name and version
        self._spans: dict[tuple[str, str], tuple[int, int]] = {}  # `state_span` by the same

    async def run(self, items: list[ChunkItem]) -> list[Outcome]:
        sessions: dict[str, _Session] = {}
        for index, item in enumerate(items):
            session = sessions.get(item.session_id)
            if session is None:
                sessions[item.session_id] = _Session(item.session_id, [index])
            else:
                session.items.append(index)
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = list(sessions.values())
        began_ms = self.sessions.now_ms()
        for attempt in range(MAX_WRITE_ATTEMPTS):
            if not pending:  # every chunk was refused before reaching the core
                return []
            await self._load(pending, attempt, began_ms)
            await self._fold(pending, items)
            stale = [session for session in pending if session.stale]
            retry = await self._write(pending)
            for session in pending:
                if not session.stale and session not in retry:
                    for index, outcome in session.outcomes.items():
                        outcomes[index] = outcome
            if not retry and not stale:
                return _answered(outcomes)
            if any(session.fresh for session in retry):  # a kept record loses without a pause
                await asyncio.sleep(backoff_seconds(attempt))
            pending = stale + retry
        for session in pending:
            busy = SessionBusy.for_session(session.session_id)
            for index in session.items:
                outcomes[index] = busy
        return _answered(outcomes)

    async def _load(self, sessions: list[_Session], attempt: int, began_ms: int) -> None:
        """Each session's record: the one kept from an earlier request on the first attempt,
        else read (all in one round)."""
        unread = sessions
        if attempt == 0:
            unread = []
            for session in sessions:
                kept = self.sessions.recent.get((self.namespace, session.session_id))
                if kept is None:
                    unread.append(session)
                else:
                    self._start(session, kept, fresh=False)
        if not unread:
            return
        blobs = await self.store.get_many(self.namespace, [s.session_id for s in unread])
        for session, blob in zip(unread, blobs, strict=True):
            self._start(session, self._decoded(session, blob, attempt, began_ms), fresh=True)

    def _decoded(
        self, session: _Session, blob: bytes | None, attempt: int, began_ms: int
    ) -> SessionRecord | ServiceError:
        """The record read, or the error every item of the session gets (as the single
        route's loop decides it)."""
        if blob is None:
            self.sessions.recent.forget((self.namespace, session.session_id))
            return SessionNotFound(session.session_id)
        try:
            record = SessionRecord.decode(blob)
        except ServiceError as error:
            return error
        if session.incarnation is None:
            if attempt > 0 and record.created_ms > began_ms:
                # The kept record lost its race to a session created since this request
                # began: the request was for the one before, which is gone.
                return SessionNotFound(session.session_id)
            session.incarnation = record.incarnation
        elif record.incarnation != session.incarnation:
            # Deleted and created again meanwhile: this request was for the old one.
            return SessionNotFound(session.session_id)
        return record

    def _start(self, session: _Session, record: SessionRecord | ServiceError, fresh: bool) -> None:
        session.outcomes = {}
        session.next_item = 0
        session.model = None
        session.fresh = fresh
        session.stale = False
        if isinstance(record, ServiceError):
            session.base = session.record = None
            session.outcomes = dict.fromkeys(session.items, record)
            session.next_item = len(session.items)
            return
        session.base = session.record = record

    async def _fold(self, sessions: list[_Session], items: list[ChunkItem]) -> None:
        """Waves: each takes, per session, the items up to the next one that needs the
        runner, so a session's second chunk starts from the state its first one left."""
        active = sessions
        while active:
            wave = [
                step for session in active if (step := self._advance(session, items)) is not None
            ]
            if not wave:
                return
            await self._run(wave)
            # Only a session with items left has a next wave (a session twice in the request).
            active = [
                step.session for step in wave if step.session.next_item < len(step.session.items)
            ]

    def _advance(self, session: _Session, items: list[ChunkItem]) -> _Step | None:
        while session.next_item < len(session.items):
            index = session.items[session.next_item]
            session.next_item += 1
            record = session.record
            assert record is not None
            item = items[index]
            try:
                model = self._model_for(record, session.session_id)
                refused = self._refusal(model, item)
                if refused is not None:
                    if not session.fresh:
                        return self._stale(session)
                    session.outcomes[index] = refused
                    continue
                x = item.x
                if record.ended or (item.offset is not None and item.offset != record.steps):
                    if not session.fresh:  # a replay or a conflict is decided on a record read
                        return self._stale(session)
                    digest = chunk_digest(x)
                    before = self._replayable(record, session.session_id, item.offset, digest)
                    session.model = model
                    return _Step(session, index, x, digest, replay_from=before)
            except ServiceError as error:
                if not session.fresh:
                    return self._stale(session)
                session.outcomes[index] = error
                continue
            session.model = model
            return _Step(session, index, x)  # the digest is made with its group's
        return None

    def _model_for(self, record: SessionRecord, session_id: str) -> ServedModel:
        """`SessionService.model_for`, once per model version in a request."""
        key = (record.model, record.model_version)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = self.sessions.model_for(record, session_id)
        return model

    @staticmethod
    def _stale(session: _Session) -> None:
        session.stale = True
        session.next_item = len(session.items)
        return None

    def _refusal(self, model: ServedModel, item: ChunkItem) -> ServiceError | None:
        """`SessionService.check`'s error, found once per model, shape and finiteness: it
        depends on nothing else."""
        finite = bool(np.isfinite(item.x).all()) if item.finite is None else item.finite
        key = (id(model), item.x.shape, finite)
        if key not in self._checked:
            try:
                self.sessions.check(model, item.x, self.sessions.limits.max_chunk_steps, finite)
                self._checked[key] = None
            except ServiceError as refused:
                self._checked[key] = refused
        return self._checked[key]

    @staticmethod
    def _replayable(
        record: SessionRecord, session_id: str, offset: int | None, digest: bytes
    ) -> Floats:
        """The state to recompute a resent last chunk from, or the single route's error."""
        before = record.state_before_last
        if (
            offset is not None
            and offset == record.last_offset
            and before is not None
            and digest == record.last_digest
        ):
            return before
        if record.ended:
            raise SessionNotFound(session_id)
        assert offset is not None
        raise OffsetConflict.for_session(offset, record.steps, session_id)

    async def _run(self, wave: list[_Step]) -> None:
        groups: dict[tuple[int, int], list[_Step]] = {}
        for step in wave:
            assert step.session.model is not None
            groups.setdefault((id(step.session.model), step.x.shape[0]), []).append(step)
        for group in groups.values():
            model = group[0].session.model
            assert model is not None
            # np.array of equal arrays stacks them, at ~40% of np.stack's cost.
            x = np.array([step.x for step in group])
            states = np.array(
                [
                    step.session.record.state  # type: ignore[union-attr]
                    if step.replay_from is None
                    else step.replay_from
                    for step in group
                ]
            )
            started = time.perf_counter()
            if x.shape[1] > THREAD_OFFLOAD_STEPS or x.shape[0] * x.shape[1] > INLINE_BATCH_STEPS:
                heavy = self.sessions.heavy
                outputs, new_states = await heavy.run(self.namespace, model.runner, x, states)
            else:
                outputs, new_states = model.runner.step_batch(x, states)
            seconds = time.perf_counter() - started
            self.sessions.telemetry.model_ran(model.name, x.shape[0] * x.shape[1], seconds)
            now = self.sessions.now_ms()
            steps = x.shape[1]
            digests = chunk_digests(x)
            written = []
            for row, step in enumerate(group):
                session = step.session
                record = session.record
                assert record is not None
                if step.replay_from is not None:  # the first answer's bits, nothing written
                    session.outcomes[step.item] = ChunkResult(
                        record, record.last_offset, outputs[row], replayed=True
                    )
                    continue
                session.record = record.after_chunk(steps, now, new_states[row], digests[row])
                session.outcomes[step.item] = ChunkResult(
                    session.record, record.steps, outputs[row], replayed=False
                )
                written.append(row)
            if written:
                self._encode([group[row].session for row in written], new_states, written)

    @staticmethod
    def _encode(sessions: list[_Session], new_states: Floats, rows: list[int]) -> None:
        """The new records' bytes up to the state before their chunk, made together
        (`encode_many`): each session's last one is what its compare-and-set writes, the
        store keeping that state from the record it replaces."""
        blobs = encode_many(
            [session.record for session in sessions],  # type: ignore[misc]
            new_states if len(rows) == len(new_states) else new_states[rows],
            None,
        )
        for session, blob in zip(sessions, blobs, strict=True):
            assert session.record is not None
            session.encoded = (session.record, blob)

    async def _write(self, sessions: list[_Session]) -> list[_Session]:
        """One pipelined round for every session this request changed; the sessions whose
        compare-and-set lost a race, to be read and folded again."""
        changed = [
            s for s in sessions if not s.stale and s.record is not None and s.record is not s.base
        ]
        if not changed:
            return []
        writes = []
        for session in changed:
            record, base = session.record, session.base
            assert record is not None
            assert base is not None  # as read: its token is what the write expects
            ttl_ms = record.ttl_seconds * 1000
            encoded = session.encoded
            if (
                encoded is not None
                and encoded[0] is record
                and record.state_before_last is base.state
            ):
                # One chunk on the record the store holds: its state is the one kept.
                key = (base.model, base.model_version)
                span = self._spans.get(key)
                if span is None:
                    span = self._spans[key] = state_span(base)
                at, length = span
                write = CasWrite(session.session_id, base.token, encoded[1], ttl_ms, at, length)
            else:
                write = CasWrite(session.session_id, base.token, record.encode(), ttl_ms)
            writes.append(write)
        recent = self.sessions.recent
        try:
            outcomes = await self.store.compare_and_set_many(self.namespace, writes)
        except ServiceError:
            for session in changed:
                recent.forget((self.namespace, session.session_id))
            raise
        retry = []
        for session, outcome in zip(changed, outcomes, strict=True):
            key = (self.namespace, session.session_id)
            if outcome is CasOutcome.APPLIED:
                assert session.record is not None
                recent.put(key, session.record)  # the single route's next read
                continue
            recent.forget(key)
            if outcome is CasOutcome.CONFLICT:
                retry.append(session)
            else:
                session.outcomes = dict.fromkeys(session.items, SessionNotFound(session.session_id))
        return retry

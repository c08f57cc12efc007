"""Many sessions' chunks in one request: at most one store read, one runner call per model
and chunk length, one pipelined round of compare-and-sets. Each chunk keeps the single
route's guarantees (applied once, replays, offset conflicts, untouched state on bad input),
and the chunks of one session apply in request order, as if sent one after another.

As on the single route, a session starts from the record this process last wrote or read
(`RecentRecords`) when it has one: the compare-and-set against its token refuses a stale
one, and the session is then read and done again. Only what a kept record cannot decide
(a replay, a conflict, an error) sends that session to be read first.

The usual request (a gateway's: every session once, each a plain append from a kept record,
one model and chunk shape) goes through `_kept_lane`, decided on the request's columns
(`ChunkColumns`) with no object per chunk but its new record; any other request, and any
session of it whose kept record lost its race, through the general fold (`_Session`,
waves, a `ChunkItem` per chunk). Both end in the same records and writes."""

import asyncio
import functools
import time
from collections.abc import Sequence
from itertools import repeat
from typing import NamedTuple

import numpy as np

from service.core.arrays import Floats
from service.core.fairness import INLINE_BATCH_STEPS, THREAD_OFFLOAD_STEPS
from service.core.models import ServedModel
from service.core.session_record import (
    SessionRecord,
    chunk_digest,
    chunk_digests,
    chunks_joined,
    encode_joined,
    state_span,
    tokens_joined,
)
from service.core.sessions import (
    MAX_WRITE_ATTEMPTS,
    ChunkResult,
    SessionService,
    backoff_seconds,
)
from service.errors import OffsetConflict, ServiceError, SessionBusy, SessionNotFound
from service.store.base import CasOutcome, CasWrite, CasWriteRun

Outcome = ChunkResult | ServiceError


class ChunkItem(NamedTuple):  # a tuple: cheaper to make than a frozen dataclass
    session_id: str
    x: Floats  # (T, F) float32
    offset: int | None = None
    finite: bool | None = None  # whether every value of x is finite, when already known


# A `ChunkItem` from its fields' tuple without a Python call (its `__new__` is one).
_item = functools.partial(tuple.__new__, ChunkItem)


class ChunkColumns(NamedTuple):
    """A request's chunks as columns, one entry per chunk in request order (item i is
    `ChunkItem(session_ids[i], inputs[i], offsets[i], finite[i])`), as `POST /v1/chunks`
    reads them: the usual request is decided on the columns, with no object per chunk."""

    session_ids: Sequence[str]
    # (T, F) float32 each; one (chunks, T, F) array when they share a shape.
    inputs: Sequence[Floats]
    offsets: Sequence[int | None]
    finite: Sequence[bool | None]

    def items(self) -> list[ChunkItem]:
        fields = zip(self.session_ids, self.inputs, self.offsets, self.finite, strict=True)
        return list(map(_item, fields))


class _Kept(NamedTuple):
    """The kept lane's request (`_ManyChunks._kept_lane`): each chunk's session and kept
    record, and the chunks' inputs as one (chunks, T, F) array."""

    ids: Sequence[str]
    x: Floats  # (chunks, T, F)
    records: list[SessionRecord]
    model: ServedModel


# A `ChunkResult` from its fields' tuple without a Python call (its `__new__` is one).
_result = functools.partial(tuple.__new__, ChunkResult)


def _stacked(inputs: Sequence[Floats]) -> Floats | None:
    """Chunks of one shape as one (chunks, T, F) array; None when their shapes differ."""
    shape = inputs[0].shape
    if any(x.shape != shape for x in inputs):
        return None
    return np.array(inputs)


class _Session:
    """One session's items in this request, folded over its record in request order. A
    wave of the fold takes at most one item of each session: the session is also that
    wave's step (`item`, `replay_from`)."""

    __slots__ = (
        "attempt",
        "base",
        "fresh",
        "in_run",
        "incarnation",
        "item",
        "items",
        "model",
        "next_item",
        "record",
        "replay_from",
        "session_id",
        "stale",
    )  # fmt: skip

    def __init__(self, session_id: str, index: int) -> None:
        self.session_id = session_id
        self.items = [index]
        self.base: SessionRecord | None = None  # the record the fold started from
        self.record: SessionRecord | None = None  # the record after the items folded so far
        self.model: ServedModel | None = None
        self.fresh = False  # `base` was just read, not kept from an earlier request
        self.stale = False  # a kept record could not decide an item: read, then fold again
        self.attempt = 0  # rounds this session lost (a race, or a kept record that was stale)
        self.incarnation: int | None = None  # the session this request is for, once read
        self.next_item = 0
        self.item = -1  # the item of this wave
        self.replay_from: Floats | None = None  # the state before the last chunk, when resent
        self.in_run = False  # written in a run of its group (`_ManyChunks._runs`)


async def predict_many(
    sessions: SessionService, namespace: str, chunks: ChunkColumns
) -> list[ChunkResult | ServiceError]:
    """Each chunk's answer or error, in request order."""
    with sessions.counted():
        return await _ManyChunks(sessions, namespace).run(chunks)


class _ManyChunks:
    def __init__(self, sessions: SessionService, namespace: str) -> None:
        self.sessions = sessions
        self.store = sessions.store
        self.recent = sessions.recent
        self.namespace = namespace
        self._checked: dict[tuple[int, tuple[int, ...], bool], ServiceError | None] = {}
        self._models: dict[tuple[str, str], ServedModel] = {}  # by a record's name and version
        self._spans: dict[tuple[str, str], tuple[int, int]] = {}  # `state_span` by the same
        # Each item's outcome as the rounds decide it: a session folded again (a lost race,
        # a stale kept record) decides each of its items again.
        self._outcomes: list[Outcome | None] = []
        # This round's writes made with their group (`_prepare_writes`), and their sessions.
        self._runs: list[tuple[CasWriteRun, list[_Session]]] = []

    async def run(self, chunks: ChunkColumns) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(chunks.session_ids)
        self._outcomes = outcomes
        began_ms = self.sessions.now_ms()
        kept = self._kept_lane(chunks)
        if kept is not None:
            lost = await self._run_kept(kept)
            # A kept record that lost its race: read, and done again as any session is.
            pending = [_Session(kept.ids[index], index) for index in lost]
            for session in pending:
                session.attempt = 1
        else:
            sessions: dict[str, _Session] = {}
            for index, session_id in enumerate(chunks.session_ids):
                known = sessions.get(session_id)
                if known is None:
                    sessions[session_id] = _Session(session_id, index)
                else:
                    known.items.append(index)
            pending = list(sessions.values())
        items = chunks.items() if pending else []
        while pending:
            self._runs = []
            await self._load(pending, began_ms)
            await self._fold(pending, items)
            stale = [session for session in pending if session.stale]
            retry = await self._write(pending)
            if any(session.fresh for session in retry):  # a kept record loses without a pause
                await asyncio.sleep(backoff_seconds(max(s.attempt for s in retry)))
            pending = []
            for session in stale + retry:
                session.attempt += 1
                if session.attempt < MAX_WRITE_ATTEMPTS:
                    pending.append(session)
                    continue
                busy = SessionBusy.for_session(session.session_id)
                for index in session.items:
                    outcomes[index] = busy
        assert None not in outcomes
        return outcomes  # type: ignore[return-value]

    def _kept_lane(self, chunks: ChunkColumns) -> _Kept | None:
        """The usual request, decided by the records this process kept, without an object
        per chunk: every session once, each with a kept record it can start from (a plain
        append or the next offset), all of one model version and one chunk shape that
        passes the checks. Their records and model; None for any other request."""
        ids, inputs, offsets = chunks.session_ids, chunks.inputs, chunks.offsets
        count = len(ids)
        if not count or chunks.finite.count(True) < count:
            return None
        # Not marked as used: the round that follows puts or forgets every one of them.
        records = self.recent.peek_many(list(zip(repeat(self.namespace), ids)))
        first = records[0]
        if first is None or len(set(ids)) < count:
            return None
        name, version = first.model, first.model_version
        for record in records:
            if (
                record is None
                or record.ended
                or record.model_version != version
                or record.model != name
            ):
                return None
        if offsets.count(None) < count:
            for offset, record in zip(offsets, records, strict=True):
                if offset is not None and offset != record.steps:  # type: ignore[union-attr]
                    return None
        x = inputs if isinstance(inputs, np.ndarray) else _stacked(inputs)
        if x is None:
            return None
        try:
            model = self._model_for(first, ids[0])
        except ServiceError:  # decided on a record read, by the general fold
            return None
        if self._refusal(model, ChunkItem(ids[0], x[0], offsets[0], True)) is not None:
            return None
        return _Kept(ids, x, records, model)  # type: ignore[arg-type]  # no record is None

    async def _run_kept(self, kept: _Kept) -> list[int]:
        """`_kept_lane`'s request: one runner call, one run of writes; the items whose kept
        record lost its compare-and-set (to be read and done again)."""
        ids, x, records = kept.ids, kept.x, kept.records
        outputs, new_states = await self._step(kept.model, x, np.array([r.state for r in records]))
        now, steps = self.sessions.now_ms(), x.shape[1]
        digests = chunk_digests(x)
        made = [
            record.after_chunk(steps, now, state, digest)
            for record, state, digest in zip(records, new_states, digests, strict=True)
        ]
        offsets = [record.steps for record in records]
        self._outcomes[:] = map(_result, zip(made, offsets, outputs, repeat(False)))
        run = CasWriteRun(
            ids, *chunks_joined(records, steps, now, new_states, digests), *self._span(records[0])
        )
        written = await self._written([run], ids, made)
        lost = []
        for row, outcome in enumerate(written):
            if outcome is CasOutcome.CONFLICT:
                lost.append(row)
            elif outcome is CasOutcome.MISSING:
                self._outcomes[row] = SessionNotFound(ids[row])
        return lost

    async def _step(self, model: ServedModel, x: Floats, states: Floats) -> tuple[Floats, Floats]:
        """`step_batch`, off the event loop when long, and its telemetry."""
        started = time.perf_counter()
        if x.shape[1] > THREAD_OFFLOAD_STEPS or x.shape[0] * x.shape[1] > INLINE_BATCH_STEPS:
            heavy = self.sessions.heavy
            outputs, new_states = await heavy.run(self.namespace, model.runner, x, states)
        else:
            outputs, new_states = model.runner.step_batch(x, states)
        seconds = time.perf_counter() - started
        self.sessions.telemetry.model_ran(model.name, x.shape[0] * x.shape[1], seconds)
        return outputs, new_states

    def _run_of(
        self,
        ids: list[str],
        records: list[SessionRecord],
        bases: list[SessionRecord],
        new_states: Floats,
    ) -> CasWriteRun:
        """The writes of records each made by one chunk from its base (the record the
        store holds) as one run: their bytes up to the state before the chunk, which the
        store keeps from the record it replaces, and the bases' tokens, column by column."""
        return CasWriteRun(
            ids,
            tokens_joined(bases),
            encode_joined(records, new_states, None),
            [record.ttl_seconds * 1000 for record in records],
            *self._span(bases[0]),
        )

    def _span(self, base: SessionRecord) -> tuple[int, int]:
        """`state_span` of the records of `base`'s model version (the same for all)."""
        key = (base.model, base.model_version)
        span = self._spans.get(key)
        if span is None:
            span = self._spans[key] = state_span(base)
        return span

    async def _load(self, sessions: list[_Session], began_ms: int) -> None:
        """Each session's record: the one kept from an earlier request on its first
        attempt, else read (all in one round)."""
        unread = []
        namespace, get = self.namespace, self.recent.get
        for session in sessions:
            kept = get((namespace, session.session_id)) if session.attempt == 0 else None
            if kept is None:
                unread.append(session)
            else:
                self._start(session, kept, fresh=False)
        if not unread:
            return
        blobs = await self.store.get_many(self.namespace, [s.session_id for s in unread])
        for session, blob in zip(unread, blobs, strict=True):
            self._start(session, self._decoded(session, blob, began_ms), fresh=True)

    def _decoded(
        self, session: _Session, blob: bytes | None, began_ms: int
    ) -> SessionRecord | ServiceError:
        """The record read, or the error every item of the session gets (as the single
        route's loop decides it)."""
        if blob is None:
            self.recent.forget((self.namespace, session.session_id))
            return SessionNotFound(session.session_id)
        try:
            record = SessionRecord.decode(blob)
        except ServiceError as error:
            return error
        if session.incarnation is None:
            if session.attempt > 0 and record.created_ms > began_ms:
                # The kept record lost its race to a session created since this request
                # began: the request was for the one before, which is gone.
                return SessionNotFound(session.session_id)
            session.incarnation = record.incarnation
        elif record.incarnation != session.incarnation:
            # Deleted and created again meanwhile: this request was for the old one.
            return SessionNotFound(session.session_id)
        return record

    def _start(self, session: _Session, record: SessionRecord | ServiceError, fresh: bool) -> None:
        session.next_item = 0
        session.model = None
        session.fresh = fresh
        session.stale = False
        session.in_run = False
        if isinstance(record, ServiceError):
            session.base = session.record = None
            for index in session.items:
                self._outcomes[index] = record
            session.next_item = len(session.items)
            return
        session.base = session.record = record

    async def _fold(self, sessions: list[_Session], items: list[ChunkItem]) -> None:
        """Waves: each takes, per session, the items up to the next one that needs the
        runner, so a session's second chunk starts from the state its first one left."""
        active = sessions
        while active:
            wave = [session for session in active if self._advance(session, items)]
            if not wave:
                return
            await self._run(wave, items)
            # Only a session with items left has a next wave (a session twice in the request).
            active = [session for session in wave if session.next_item < len(session.items)]

    def _advance(self, session: _Session, items: list[ChunkItem]) -> bool:
        """Decides the session's items up to the next one that needs the runner, which it
        makes the session's item of this wave; False when none is left (or the kept record
        could not decide one: the session is then stale)."""
        outcomes = self._outcomes
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
                    outcomes[index] = refused
                    continue
                replay_from = None
                if record.ended or (item.offset is not None and item.offset != record.steps):
                    if not session.fresh:  # a replay or a conflict is decided on a record read
                        return self._stale(session)
                    digest = chunk_digest(item.x)
                    replay_from = self._replayable(record, session.session_id, item.offset, digest)
            except ServiceError as error:
                if not session.fresh:
                    return self._stale(session)
                outcomes[index] = error
                continue
            session.model = model
            session.item = index
            session.replay_from = replay_from
            return True
        return False

    def _model_for(self, record: SessionRecord, session_id: str) -> ServedModel:
        """`SessionService.model_for`, once per model version in a request."""
        key = (record.model, record.model_version)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = self.sessions.model_for(record, session_id)
        return model

    @staticmethod
    def _stale(session: _Session) -> bool:
        session.stale = True
        session.next_item = len(session.items)
        return False

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

    async def _run(self, wave: list[_Session], items: list[ChunkItem]) -> None:
        first = wave[0]
        steps = items[first.item].x.shape[0]
        if all(s.model is first.model and items[s.item].x.shape[0] == steps for s in wave):
            groups = [wave]  # the usual request: one model, one chunk length
        else:
            by_key: dict[tuple[int, int], list[_Session]] = {}
            for session in wave:
                key = (id(session.model), items[session.item].x.shape[0])
                by_key.setdefault(key, []).append(session)
            groups = list(by_key.values())
        for group in groups:
            await self._run_group(group, items)

    async def _run_group(self, group: list[_Session], items: list[ChunkItem]) -> None:
        """One runner call for sessions of one model and chunk length; their answers, new
        records and those records' writes."""
        model = group[0].model
        assert model is not None
        # np.array of equal arrays stacks them, at ~40% of np.stack's cost.
        x = np.array([items[session.item].x for session in group])
        states = np.array(
            [
                session.record.state  # type: ignore[union-attr]
                if session.replay_from is None
                else session.replay_from
                for session in group
            ]
        )
        outputs, new_states = await self._step(model, x, states)
        now = self.sessions.now_ms()
        steps = x.shape[1]
        digests = chunk_digests(x)
        outcomes = self._outcomes
        written: list[_Session] = []
        rows: list[int] = []
        for row, session in enumerate(group):
            record = session.record
            assert record is not None
            if session.replay_from is not None:  # the first answer's bits, nothing written
                outcomes[session.item] = ChunkResult(
                    record, record.last_offset, outputs[row], replayed=True
                )
                continue
            session.record = after = record.after_chunk(steps, now, new_states[row], digests[row])
            outcomes[session.item] = ChunkResult(after, record.steps, outputs[row], False)
            written.append(session)
            rows.append(row)
        if written:
            self._prepare_writes(
                written, new_states if len(rows) == len(group) else new_states[rows]
            )

    def _prepare_writes(self, sessions: list[_Session], new_states: Floats) -> None:
        """The writes of the sessions with one chunk in the request, as one run: their new
        records' bytes up to the state before the chunk (the store keeps that state from
        the record it replaces, the one the chunk ran from), made column by column. A
        session with more chunks is written whole once they are all folded (`_write`)."""
        rows = [row for row, session in enumerate(sessions) if len(session.items) == 1]
        if not rows:
            return
        members = sessions
        if len(rows) < len(sessions):
            members, new_states = [sessions[row] for row in rows], new_states[rows]
        for session in members:
            session.in_run = True
        run = self._run_of(
            [session.session_id for session in members],
            [session.record for session in members],  # type: ignore[misc]
            [session.base for session in members],  # type: ignore[misc]
            new_states,
        )
        self._runs.append((run, members))

    async def _write(self, sessions: list[_Session]) -> list[_Session]:
        """One pipelined round for every session this request changed; the sessions whose
        compare-and-set lost a race, to be read and folded again."""
        changed: list[_Session] = []
        writes: list[CasWrite | CasWriteRun] = []
        for run, members in self._runs:
            writes.append(run)
            changed += members
        for session in sessions:
            record, base = session.record, session.base
            if session.in_run or session.stale or record is None or record is base:
                continue
            assert base is not None  # as read: its token is what the write expects
            ttl_ms = record.ttl_seconds * 1000
            writes.append(CasWrite(session.session_id, base.token, record.encode(), ttl_ms))
            changed.append(session)
        if not changed:
            return []
        written = await self._written(
            writes,
            [session.session_id for session in changed],
            [session.record for session in changed],  # type: ignore[misc]
        )
        retry = []
        for session, outcome in zip(changed, written, strict=True):
            if outcome is CasOutcome.CONFLICT:
                retry.append(session)
            elif outcome is CasOutcome.MISSING:
                missing = SessionNotFound(session.session_id)
                for index in session.items:
                    self._outcomes[index] = missing
        return retry

    async def _written(
        self,
        writes: list[CasWrite | CasWriteRun],
        ids: Sequence[str],
        records: list[SessionRecord],
    ) -> list[CasOutcome]:
        """One round of compare-and-sets, one outcome per session (`ids[i]`, whose new
        record is `records[i]`). The kept records follow: an applied one is the session's
        next read; any other, or all of them when the store fails, are forgotten."""
        namespace, recent = self.namespace, self.recent
        try:
            outcomes = await self.store.compare_and_set_many(namespace, writes)
        except ServiceError:
            for session_id in ids:
                recent.forget((namespace, session_id))
            raise
        if outcomes.count(CasOutcome.APPLIED) == len(outcomes):
            recent.put_many(list(zip(repeat(namespace), ids)), records)
            return outcomes
        for session_id, record, outcome in zip(ids, records, outcomes, strict=True):
            if outcome is CasOutcome.APPLIED:
                recent.put((namespace, session_id), record)
            else:
                recent.forget((namespace, session_id))
        return outcomes

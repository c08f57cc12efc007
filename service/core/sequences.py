"""Triton-style sequences (the `/v2` protocol) on the session data plane.

A sequence is a session whose id is derived from the model and the client's sequence id:
sequences are per model, as in Triton, and integer 7 and string "7" are two different
sequences. The derived ids start with ':', which native session ids cannot
(`SESSION_ID_PATTERN`), so a V2 sequence and a `/v1` session never share a key.
"""

import contextlib
import json
from dataclasses import dataclass
from urllib.parse import quote

from service.core.arrays import Floats
from service.core.models import ServedModel
from service.core.sessions import ChunkResult, SessionService
from service.errors import (
    InvalidInput,
    ModelVersionMismatch,
    OffsetConflict,
    SequenceNotFound,
    SequenceOffsetConflict,
    SequenceVersionMismatch,
    SessionBusy,
    SessionExists,
    SessionNotFound,
)

SequenceId = int | str

# A start races with an end of the same sequence at most this many times before giving up.
START_ATTEMPTS = 5


@dataclass(frozen=True)
class InferRequest:
    """One V2 inference call, whatever its transport: stateless without a `sequence_id`."""

    id: str | None
    inputs: Floats
    binary_output: bool
    sequence_id: SequenceId | None = None
    sequence_start: bool = False
    sequence_end: bool = False
    sequence_offset: int | None = None


@dataclass(frozen=True)
class Inference:
    outputs: Floats  # batch first
    chunk: ChunkResult | None  # None for a stateless call


def sequence_session_id(model: str, sequence_id: SequenceId) -> str:
    kind = "s" if isinstance(sequence_id, str) else "i"
    return f":v2:{quote(model, safe='')}:{kind}:{sequence_id}"


def describe(sequence_id: SequenceId) -> str:
    """`7` for an integer id, `"7"` for a string one, as the client wrote it."""
    return json.dumps(sequence_id, ensure_ascii=False)


class SequenceService:
    """Sequences that start, continue and end, on `SessionService`."""

    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions

    async def run(self, namespace: str, model: ServedModel, call: InferRequest) -> Inference:
        """A V2 call: a stateless predict, or one chunk of the call's sequence."""
        if call.sequence_id is None:
            outputs = await self.sessions.predict_stateless(namespace, model, call.inputs)
            return Inference(outputs, None)
        chunk = await self.infer(
            namespace,
            model,
            call.sequence_id,
            call.inputs,
            start=call.sequence_start,
            end=call.sequence_end,
            offset=call.sequence_offset,
        )
        return Inference(chunk.outputs[None], chunk)

    async def infer(
        self,
        namespace: str,
        model: ServedModel,
        sequence_id: SequenceId,
        x: Floats,
        *,
        start: bool = False,
        end: bool = False,
        offset: int | None = None,
    ) -> ChunkResult:
        """Apply one chunk (batch 1) to the sequence; `start` first returns it to zero state,
        `end` leaves it as a short-lived tombstone that answers only a retry of that chunk."""
        if x.ndim == 3 and x.shape[0] != 1:
            raise InvalidInput(
                f"a request with a sequence_id carries one sequence: batch size must be 1, "
                f"not {x.shape[0]}"
            )
        # Checked here too, so that a bad chunk with sequence_start resets nothing.
        self.sessions.check(model, x, self.sessions.limits.max_chunk_steps)
        session_id = sequence_session_id(model.name, sequence_id)
        name = f"sequence {describe(sequence_id)} of model '{model.name}'"
        try:
            if start:
                await self._start(namespace, model, session_id)
            result = await self.sessions.predict(namespace, session_id, x[0], offset)
        except SessionNotFound:
            raise SequenceNotFound(name, sequence_id) from None
        except OffsetConflict as exc:
            raise SequenceOffsetConflict(offset, exc.details["steps"], name) from None
        except ModelVersionMismatch as exc:
            raise SequenceVersionMismatch(name, **exc.details) from None
        except SessionBusy:
            raise SessionBusy(name) from None
        if end:
            # Ended concurrently or expired: gone either way.
            with contextlib.suppress(SessionNotFound):
                await self.sessions.end(namespace, session_id)
        return result

    async def _start(self, namespace: str, model: ServedModel, session_id: str) -> None:
        """Create the session at zero state on `model`'s version, or reset it when it exists."""
        for _ in range(START_ATTEMPTS):
            try:
                await self.sessions.create(namespace, model.name, session_id, version=model.number)
                return
            except SessionExists:
                pass
            try:
                await self.sessions.reset(namespace, session_id, version=model.number)
                return
            except SessionNotFound:
                continue  # ended between the two calls: create it again
        raise SessionBusy("the sequence (started and ended concurrently)")

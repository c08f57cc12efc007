"""Batches and Triton-style sequences (the `/v2` protocol) on the session data plane.

A sequence is a session whose id is derived from the model and the client's sequence id:
sequences are per model, as in Triton, and integer 7 and string "7" are two different
sequences. The derived ids start with ':', which native session ids cannot
(`SESSION_ID_PATTERN`), so a V2 sequence and a `/v1` session never share a key.
"""

import asyncio
import contextlib
import json
import time
from urllib.parse import quote

import numpy as np

from service.core.inputs import Floats
from service.core.models import ServedModel
from service.core.sessions import THREAD_OFFLOAD_STEPS, ChunkResult, SessionService
from service.errors import (
    InvalidInput,
    ModelVersionMismatch,
    OffsetConflict,
    SessionBusy,
    SessionExists,
    SessionNotFound,
)

SequenceId = int | str

# A start races with an end of the same sequence at most this many times before giving up.
START_ATTEMPTS = 5


def sequence_session_id(model: str, sequence_id: SequenceId) -> str:
    kind = "s" if isinstance(sequence_id, str) else "i"
    return f":v2:{quote(model, safe='')}:{kind}:{sequence_id}"


def describe(sequence_id: SequenceId) -> str:
    """`7` for an integer id, `"7"` for a string one, as the client wrote it."""
    return json.dumps(sequence_id, ensure_ascii=False)


def check_batch(model: ServedModel, x: Floats, max_steps: int) -> None:
    """Refuse (B, T, F) inputs the model cannot take, before anything is written."""
    features = model.runner.input_features
    if x.ndim != 3 or x.shape[2] != features:
        raise InvalidInput(
            f"inputs have shape {list(x.shape)}; model '{model.name}' takes "
            f"[batch, timesteps, {features}]",
            expected_features=features,
        )
    batch, steps = x.shape[0], x.shape[1]
    if batch == 0 or steps == 0:
        raise InvalidInput("inputs must hold at least one sequence of at least one timestep")
    if batch * steps > max_steps:
        raise InvalidInput(
            f"{batch} x {steps} timesteps exceed the limit of {max_steps} per call",
            max_steps=max_steps,
        )
    if not np.isfinite(x).all():
        raise InvalidInput(
            "inputs must be finite: NaN, Infinity and values beyond float32 range are refused"
        )


class SequenceService:
    """Stateless batches and sequences that start, continue and end, on `SessionService`."""

    def __init__(self, sessions: SessionService) -> None:
        self.sessions = sessions

    async def infer_batch(self, model: ServedModel, x: Floats) -> Floats:
        """Every row from zero state; row b equals a one-row call on `x[b]` bit for bit."""
        check_batch(model, x, self.sessions.limits.max_predict_steps)
        if x.shape[0] * x.shape[1] > THREAD_OFFLOAD_STEPS:
            return await asyncio.to_thread(self._run_batch, model, x)
        return self._run_batch(model, x)

    def _run_batch(self, model: ServedModel, x: Floats) -> Floats:
        started = time.perf_counter()
        states = np.tile(model.runner.initial_state(), (x.shape[0], 1))
        outputs, _ = model.runner.step_batch(x, states)
        elapsed = time.perf_counter() - started
        self.sessions.telemetry.model_ran(model.name, x.shape[0] * x.shape[1], elapsed)
        return outputs

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
        `end` deletes it once the chunk is answered."""
        if x.ndim == 3 and x.shape[0] != 1:
            raise InvalidInput(
                f"a request with a sequence_id carries one sequence: batch size must be 1, "
                f"not {x.shape[0]}"
            )
        check_batch(model, x, self.sessions.limits.max_chunk_steps)
        session_id = sequence_session_id(model.name, sequence_id)
        name = f"sequence {describe(sequence_id)} of model '{model.name}'"
        try:
            if start:
                await self._start(namespace, model.name, session_id)
            result = await self.sessions.predict(namespace, session_id, x[0].tolist(), offset)
        except SessionNotFound:
            raise SessionNotFound(
                f"{name} was never started or has expired; send sequence_start=true to start it",
                sequence_id=sequence_id,
            ) from None
        except OffsetConflict as exc:
            steps = exc.details.get("steps")
            raise OffsetConflict(
                f"sequence_offset {offset} does not match {name}, which is at step {steps}",
                steps=steps,
                offset=offset,
            ) from None
        except ModelVersionMismatch as exc:
            raise ModelVersionMismatch(
                f"{name} was started on another version of the model; send "
                "sequence_start=true to restart it on the served version",
                **exc.details,
            ) from None
        except SessionBusy:
            raise SessionBusy(f"{name} is being written by other requests; retry") from None
        if end:
            # Ended concurrently or expired: gone either way.
            with contextlib.suppress(SessionNotFound):
                await self.sessions.delete(namespace, session_id)
        return result

    async def _start(self, namespace: str, model_name: str, session_id: str) -> None:
        """Create the session at zero state, or reset it when it exists."""
        for _ in range(START_ATTEMPTS):
            try:
                await self.sessions.create(namespace, model_name, session_id)
                return
            except SessionExists:
                pass
            try:
                await self.sessions.reset(namespace, session_id)
                return
            except SessionNotFound:
                continue  # ended between the two calls: create it again
        raise SessionBusy("the sequence is being started and ended concurrently; retry")

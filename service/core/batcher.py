"""Cross-session micro-batching: chunks of one model that wait at the same moment run as
one `step_batch` call. The runner computes every row on its own, so each session's
outputs and state are bit for bit those of running its chunk alone."""

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from service.core.arrays import Floats
from service.core.runner import StreamingRunner
from service.telemetry import NULL_TELEMETRY, Telemetry

Result = tuple[Floats, Floats]


@dataclass
class _Batch:
    runner: StreamingRunner
    model: str  # for telemetry
    loop: asyncio.AbstractEventLoop  # the one it runs on: its later chunks need not ask
    inputs: list[Floats] = field(default_factory=list)
    states: list[Floats] = field(default_factory=list)
    waiters: list[asyncio.Future[Result]] = field(default_factory=list)
    closed: bool = False


# While batches of a key hold one chunk, every this many of its chunks still opens one, to
# see whether others now arrive with it.
PROBE_EVERY = 8


class MicroBatcher:
    """Gathers concurrent `step` calls on one runner, of one chunk length, into batches.

    A batch opens with its first chunk and runs on the next turn of the event loop
    (after `max_wait_seconds`, when set), or at once when it holds `max_batch` chunks.
    Each batch reports one runner call to `telemetry`, as `POST /v1/chunks` does.
    """

    def __init__(
        self,
        max_batch: int = 64,
        max_wait_seconds: float = 0.0,
        telemetry: Telemetry = NULL_TELEMETRY,
    ) -> None:
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self.telemetry = telemetry
        self._open: dict[tuple[int, int], _Batch] = {}
        self._last_size: dict[tuple[int, int], int] = {}
        self._alone: dict[tuple[int, int], int] = {}
        self.batches = 0
        self.chunks = 0

    def worth_waiting(self, runner: StreamingRunner, x: Floats) -> bool:
        """Whether `x` should go through `step` rather than run alone at once: a batch of
        its kind is open, or the last one had company. Waiting a loop turn for a batch of
        one costs more than the batch saves (~10% CPU per 1-step chunk when the CPU is not
        saturated), so a chunk arriving alone runs alone, except every `PROBE_EVERY`th.
        With `max_wait_seconds` set, every chunk waits: company is then worth the delay."""
        key = (id(runner), x.shape[0])
        if self.max_wait_seconds > 0 or key in self._open or self._last_size.get(key, 2) > 1:
            return True
        alone = self._alone.get(key, 0) + 1
        self._alone[key] = alone % PROBE_EVERY
        return alone == PROBE_EVERY

    def step(
        self, runner: StreamingRunner, x: Floats, state: Floats, model: str = ""
    ) -> asyncio.Future[Result]:
        """The chunk's outputs and state, once its batch has run. A future, not a coroutine:
        the caller awaits the batch with no frame of this method to resume."""
        key = (id(runner), x.shape[0])
        batch = self._open.get(key)
        if batch is not None:
            loop = batch.loop
        else:
            # Asked once per batch: on Python 3.11 the question costs a `getpid` system call.
            loop = asyncio.get_running_loop()
            batch = self._open[key] = _Batch(runner, model, loop)
            if self.max_wait_seconds > 0:
                loop.call_later(self.max_wait_seconds, self._run, key, batch)
            else:
                loop.call_soon(self._run, key, batch)
        waiter: asyncio.Future[Result] = loop.create_future()
        batch.inputs.append(x)
        batch.states.append(state)
        batch.waiters.append(waiter)
        if len(batch.inputs) >= self.max_batch:
            self._run(key, batch)
        return waiter

    def _run(self, key: tuple[int, int], batch: _Batch) -> None:
        if batch.closed:
            return
        batch.closed = True
        if self._open.get(key) is batch:
            del self._open[key]
        self._last_size[key] = len(batch.inputs)
        self.batches += 1
        self.chunks += len(batch.inputs)
        started = time.perf_counter()
        try:
            # `np.array` of same-shaped rows is `np.stack`'s result at ~40% of its cost.
            x = np.array(batch.inputs)
            outputs, states = batch.runner.step_batch(x, np.array(batch.states))
        except Exception as exc:  # every waiter gets the runner's own error
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        self.telemetry.model_ran(
            batch.model, x.shape[0] * x.shape[1], time.perf_counter() - started
        )
        for row, waiter in enumerate(batch.waiters):
            if not waiter.done():  # a cancelled request leaves its row unread
                waiter.set_result((outputs[row], states[row]))

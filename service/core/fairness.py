"""Fair shares between API keys: a bound on concurrent heavy work, per key and in total,
on the bytes of large bodies being read, and on the memory one request's tensors may take."""

import asyncio
import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from service.core.arrays import Floats
from service.core.runner import StreamingRunner
from service.errors import RateLimited, TensorsTooLarge

T = TypeVar("T")

# Work of more timesteps than this (batch x steps) runs in a worker thread: it is "heavy".
THREAD_OFFLOAD_STEPS = 32
# A batch of such short rows stays on the event loop up to this many timesteps in all, as
# the micro-batcher's largest batch does: a worker thread's hand-off costs more than it.
INLINE_BATCH_STEPS = 64 * THREAD_OFFLOAD_STEPS
# Heavy work yields to other requests' heavy work between slices of this many timesteps.
SLICE_STEPS = 256
# A request body larger than this is "large": its bytes count against `BodyBytes`, and the
# request is heavy work from its first byte.
LARGE_BODY_BYTES = 64 * 1024
# The HeavyWork whose admission the current request (its task) holds already.
_HELD: ContextVar["HeavyWork | None"] = ContextVar("heavy_work_held", default=None)


@dataclass
class _Queued:
    queued: bool = False  # counted in `HeavyWork._waiting`


@dataclass
class _Progress(_Queued):
    """One heavy job's position: where its next slice starts, what it computed so far."""

    states: Floats = field(default_factory=lambda: np.zeros(0, np.float32))
    start: int = 0
    outputs: list[Floats] = field(default_factory=list)
    cancelled: bool = False
    sink: Callable[[Floats], None] | None = None  # each slice's outputs, to the loop


@dataclass
class _Steps(_Queued):
    """A sliced job's generator, and its value once it has returned."""

    steps: Generator[None, None, object] | None = None
    finished: bool = False
    value: object = None
    cancelled: bool = False


def lower_thread_priority(nice: int) -> None:
    """Makes the calling thread `nice` steps less favoured by the kernel's scheduler than
    it is now (at most 19). Linux keeps niceness per thread: the heavy-work thread, lowered,
    leaves a contended core to the event loop first. Elsewhere, or if refused, nothing."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        now = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, now + nice))


class OutputSink(Protocol):
    """Takes a one-row computation's outputs slice by slice, on the event loop, while the
    heavy-work thread computes the next slice: an answer's encoding overlaps the runner."""

    def restart(self) -> None:
        """A computation begins: the slices of any earlier one are void."""

    def add(self, outputs: Floats) -> None:
        """The next slice's (T, U) outputs, in order."""


class HeavyWork:
    """Runs heavy work (more than `THREAD_OFFLOAD_STEPS` timesteps) off the event loop, fairly.

    Requests in flight are counted per key; one past `per_key` for its key, or past `total`,
    is refused at once with 429 `rate_limited` rather than queued. Each thread running
    long work takes a core (and the interpreter lock between kernel calls) from the event
    loop that serves every short chunk: heavy work runs in one thread, in slices of
    `slice_steps` timesteps taken in arrival order, so a 40-step chunk waits for one slice
    of a 100,000-step predict, not for all of it. A job computes its slices back to back in
    the thread while no other heavy work waits for it, and goes back to the end of the queue
    as soon as some does: handing each of a 10,000-step predict's 40 slices back to the
    event loop cost 10-20% of its CPU (docs/benchmarks.md). A sequence cut at any step gives
    the same bits (the runner is chunk-invariant)."""

    def __init__(
        self, per_key: int, total: int, slice_steps: int = SLICE_STEPS, nice: int = 0
    ) -> None:
        self.per_key = per_key
        self.total = total
        self.slice_steps = slice_steps
        self._by_key: Counter[str] = Counter()
        self._running = 0
        self._waiting = 0  # jobs queued for the thread; changed under `_lock` by both threads
        self._requests = 0  # requests in progress in the process (`request`)
        self._lock = threading.Lock()
        self._thread = ThreadPoolExecutor(
            1, thread_name_prefix="lstm-heavy", initializer=lower_thread_priority, initargs=(nice,)
        )

    async def run(
        self,
        namespace: str,
        runner: StreamingRunner,
        x: Floats,
        states: Floats,
        sink: OutputSink | None = None,
    ) -> tuple[Floats, Floats]:
        """`runner.step_batch(x, states)`, x: (B, T, F), computed slice by slice; with one
        row of a per-step model, each slice's outputs also go to `sink` as they come."""
        with self.held(namespace):
            loop = asyncio.get_running_loop()
            progress = _Progress(states=states)
            if sink is not None and x.shape[0] == 1 and runner.per_step:
                sink.restart()
                add = sink.add

                def to_loop(outputs: Floats) -> None:
                    loop.call_soon_threadsafe(add, outputs)

                progress.sink = to_loop
            try:
                while progress.start < x.shape[1]:
                    self._count_waiting(progress, True)
                    await loop.run_in_executor(self._thread, self._slices, runner, x, progress)
            finally:
                progress.cancelled = True  # a cancelled request's thread stops at its slice
                self._count_waiting(progress, False)  # cancelled before the thread took it
        pieces = progress.outputs
        if not runner.per_step:
            return pieces[-1], progress.states
        outputs = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=1)
        return outputs, progress.states

    def _slices(self, runner: StreamingRunner, x: Floats, progress: _Progress) -> None:
        """In the thread: slices from `progress.start` until the end, or until other heavy
        work waits."""
        self._count_waiting(progress, False)
        width = max(1, self.slice_steps // x.shape[0])  # timesteps of all rows per slice
        while progress.start < x.shape[1] and not progress.cancelled:
            piece = x[:, progress.start : progress.start + width]
            outputs, progress.states = runner.step_batch(piece, progress.states)
            progress.outputs.append(outputs)
            progress.start += piece.shape[1]
            if progress.sink is not None:
                progress.sink(outputs[0])
            if self._waiting:
                return

    @property
    def requests_in_progress(self) -> int:
        return self._requests

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Counts a request in progress (kept by the API for every HTTP request, gRPC call,
        and open WebSocket or gRPC stream)."""
        self._requests += 1
        try:
            yield
        finally:
            self._requests -= 1

    async def call_sliced(self, steps: Generator[None, None, T]) -> T:
        """The generator's work in the heavy-work thread, one slice between two of its
        `yield`s; its return value is the result. Its slices hold the interpreter lock
        (decoding, encoding): they run back to back only while its request is the only one
        in progress, one hand-off for the whole job. Otherwise each goes back to the event
        loop, which holds the lock freely between two, and queues again behind any other
        heavy work (a thread that kept it would make the loop wait for the lock at every
        turn: a flood's 1-step p99 went from ~60 to ~160 ms, docs/benchmarks.md)."""
        loop = asyncio.get_running_loop()
        job = _Steps(steps=steps)
        try:
            while not job.finished:
                self._count_waiting(job, True)
                await loop.run_in_executor(self._thread, self._steps, job)
        finally:
            job.cancelled = True
            self._count_waiting(job, False)
        return job.value  # type: ignore[return-value]

    def _steps(self, job: _Steps) -> None:
        self._count_waiting(job, False)
        assert job.steps is not None
        while not job.cancelled:
            try:
                next(job.steps)
            except StopIteration as returned:
                job.finished, job.value = True, returned.value
                return
            if self._waiting or self._requests > 1:
                return

    def _count_waiting(self, job: _Queued, queued: bool) -> None:
        with self._lock:
            if job.queued != queued:
                job.queued = queued
                self._waiting += 1 if queued else -1

    async def call(self, work: Callable[..., T], *args: object) -> T:
        """`work(*args)` as one slice in the heavy-work thread, after the slices before it
        (a long job yields the thread to it). A slice should be short: the event loop
        waits for the interpreter lock it holds."""
        ticket = _Queued()

        def started() -> T:
            self._count_waiting(ticket, False)
            return work(*args)

        self._count_waiting(ticket, True)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, started)
        finally:
            self._count_waiting(ticket, False)  # cancelled before the thread took it

    @contextlib.contextmanager
    def held(self, namespace: str) -> Iterator[None]:
        """The current request counts as heavy work of `namespace` until the block ends
        (429 `rate_limited` if it cannot); heavy work it runs meanwhile counts no further."""
        if _HELD.get() is self:
            yield
            return
        with self._admitted(namespace):
            # Set back rather than reset by token: a body may be read from a child task.
            previous = _HELD.get()
            _HELD.set(self)
            try:
                yield
            finally:
                _HELD.set(previous)

    @contextlib.contextmanager
    def _admitted(self, namespace: str) -> Iterator[None]:
        if self._by_key[namespace] >= self.per_key:
            raise RateLimited.heavy_work(self.per_key, THREAD_OFFLOAD_STEPS)
        if self._running >= self.total:
            raise RateLimited.heavy_work(self.total, THREAD_OFFLOAD_STEPS, whole_server=True)
        self._by_key[namespace] += 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._by_key[namespace] -= 1
            if not self._by_key[namespace]:
                del self._by_key[namespace]

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def tensor_bytes(runner: StreamingRunner, batch: int, steps: int) -> int:
    """What a request's tensors take as float32: inputs, outputs, and a state per sequence."""
    per_step = runner.input_features + runner.output_features
    return 4 * batch * (steps * per_step + runner.state_size)


def check_tensor_bytes(runner: StreamingRunner, batch: int, steps: int, limit: int) -> None:
    needed = tensor_bytes(runner, batch, steps)
    if needed > limit:
        raise TensorsTooLarge(batch, steps, needed, limit)


class BodyBytes:
    """Bytes of large request bodies being read and parsed, per key and in total: a body
    that would take its key past `per_key`, or the process past `total`, is refused with
    429 `rate_limited` before (or as soon as) its bytes arrive."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._by_key: Counter[str] = Counter()
        self._taken = 0

    def take(self, namespace: str, size: int) -> None:
        if self._by_key[namespace] + size > self.per_key:
            raise RateLimited.body_bytes(self.per_key, LARGE_BODY_BYTES)
        if self._taken + size > self.total:
            raise RateLimited.body_bytes(self.total, LARGE_BODY_BYTES, True)
        self._by_key[namespace] += size
        self._taken += size

    def give_back(self, namespace: str, size: int) -> None:
        self._taken -= size
        self._by_key[namespace] -= size
        if self._by_key[namespace] <= 0:
            del self._by_key[namespace]

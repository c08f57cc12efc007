"""How late the event loop runs what falls due: the time every short request waits behind
whatever holds the loop (one long callback), the interpreter lock (another thread running
Python) or the CPU (other processes: the OS scheduler). A timer due every `interval`
seconds measures how late it ran; on Linux, the loop thread's own run-queue wait
(`/proc/thread-self/schedstat`) tells the scheduler's part from the process's own."""

import asyncio
import os
import time
from collections.abc import Callable

SCHEDSTAT = "/proc/thread-self/schedstat"


def cpu_wait_ns() -> int | None:
    """Nanoseconds the calling thread has waited, runnable, for a CPU; None off Linux."""
    try:
        fd = os.open(SCHEDSTAT, os.O_RDONLY)
    except OSError:
        return None
    try:
        return int(os.read(fd, 128).split()[1])
    except (OSError, IndexError, ValueError):
        return None
    finally:
        os.close(fd)


async def probe_loop_lag(interval: float, observe: Callable[[float, float | None], None]) -> None:
    """Until cancelled: `observe(lag, own)` for a timer due every `interval` seconds. `lag`:
    seconds it ran late; `own`: the lag less the loop thread's run-queue wait meanwhile (what
    callbacks and the interpreter lock took), None where that is not known."""
    waited = cpu_wait_ns()
    while True:
        # Not `loop.time()`: uvloop's is whole milliseconds, cached at each turn's start.
        start = time.perf_counter()
        await asyncio.sleep(interval)
        lag = max(0.0, time.perf_counter() - start - interval)
        now = cpu_wait_ns()
        # The wait is over the whole sleep: a wait before the timer fell due is taken off
        # too, so `own` errs low, never high.
        own = None if now is None or waited is None else max(0.0, lag - (now - waited) / 1e9)
        waited = now
        observe(lag, own)

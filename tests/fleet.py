"""Several `lstm-serve` processes over one Redis: start them, kill them, stream across them."""

import asyncio
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tests.processes import ServiceProcess


def start_all(processes: list[ServiceProcess]) -> list[ServiceProcess]:
    """Start every process at once (TensorFlow's import dominates, and runs in parallel)."""
    with ThreadPoolExecutor(len(processes)) as pool:
        futures = [pool.submit(process.start) for process in processes]
    failures = [future.exception() for future in futures if future.exception()]
    if failures:
        for process in processes:
            process.stop()
        raise RuntimeError(f"{len(failures)} lstm-serve processes did not start: {failures[0]}")
    return processes


def worker_pids(process: ServiceProcess) -> list[int]:
    """The uvicorn worker processes of an `lstm-serve --workers N` process."""
    pid = process.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [
        int(child)
        for child in children
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def freeze_then_kill(pid: int, seconds: float, kill: Callable[[], None]) -> None:
    """SIGSTOP `pid` now and call `kill` `seconds` later (from the running event loop): the
    requests it holds meanwhile are cut off mid-flight, not merely refused."""
    os.kill(pid, signal.SIGSTOP)
    asyncio.get_running_loop().call_later(seconds, kill)


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@dataclass
class StreamLog:
    """What a failover stream saw: answers by chunk, and the failures it went around."""

    outputs: list[np.ndarray] = field(default_factory=list)
    transport_errors: int = 0
    replayed: int = 0


async def stream_with_failover(
    client: httpx.AsyncClient,
    pick_url: Callable[[int, int], str],
    session_id: str,
    inputs: np.ndarray,
    sizes: list[int],
    on_chunk: Callable[[], None] | None = None,
) -> StreamLog:
    """Send `inputs` in `sizes` chunks with offsets, chunk i to `pick_url(i, attempt)`. A
    request cut off by a dying replica is sent again, same offset, to the next pick: it is
    either applied now or was applied before and is replayed; the answer is the same."""
    log, start = StreamLog(), 0
    for index, size in enumerate(sizes):
        body = {"inputs": inputs[start : start + size].tolist(), "offset": start}
        for attempt in range(10):
            url = pick_url(index, attempt)
            try:
                response = await client.post(f"{url}/v1/sessions/{session_id}/predict", json=body)
            except httpx.TransportError:
                log.transport_errors += 1
                await asyncio.sleep(0.05)
                continue
            assert response.status_code == 200, response.text
            answer = response.json()
            assert (answer["offset"], answer["steps"]) == (start, start + size)
            log.replayed += answer["replayed"]
            log.outputs.append(np.array(answer["outputs"], dtype=np.float32))
            break
        else:
            raise AssertionError(f"chunk {index} of {session_id} found no live replica")
        start += size
        if on_chunk:
            on_chunk()
    return log

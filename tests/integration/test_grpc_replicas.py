"""gRPC across real `lstm-serve` processes over one Redis: the workers of one process share
its gRPC port, and a stream cut by a killed replica resumes on another by offset."""

import contextlib
import queue
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from service.store.embedded import EmbeddedRedis
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess
from tests.streaming import predict, random_chunking

pytestmark = pytest.mark.slow

MODEL = "sensor-lstm"


@pytest.fixture(scope="module")
def replicas(redis_server: EmbeddedRedis, tmp_path_factory) -> Iterator[list[ServiceProcess]]:
    """Replica A with two workers, replica B with one, both serving gRPC."""
    logs = tmp_path_factory.mktemp("grpc-replicas")
    processes = [
        ServiceProcess(redis_server.url, DEMO_DIR, workers=workers, grpc=True, log_path=logs / name)
        for name, workers in (("a.log", 2), ("b.log", 1))
    ]
    try:
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(lambda p: p.start(timeout=180), processes))
        yield processes
    finally:
        for process in processes:
            process.stop()


def listening_sockets(port: int) -> int:
    """LISTEN entries for `port` in the kernel's table: one per process bound to it."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.split(":")[1], 16) == port
    return count


def infer_inputs(x: np.ndarray) -> list[grpcclient.InferInput]:
    tensor = grpcclient.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return [tensor]


def test_the_workers_of_one_process_share_its_grpc_port(replicas):
    a = replicas[0]
    deadline = time.monotonic() + 60
    while listening_sockets(a.grpc_port) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert listening_sockets(a.grpc_port) == 2

    rng = np.random.default_rng(11)
    with httpx.Client(base_url=a.url, timeout=30) as client:
        for _ in range(4):  # a connection each: the kernel spreads them over the workers
            x = rng.normal(size=(1, 7, 16)).astype(np.float32)
            with grpcclient.InferenceServerClient(a.grpc_address) as triton:
                outputs = triton.infer(MODEL, infer_inputs(x)).as_numpy("outputs")
            assert outputs[0].tobytes() == predict(client, MODEL, x[0]).tobytes()


def test_a_stream_cut_by_a_killed_replica_resumes_on_another_by_offset(replicas):
    a, b = replicas
    rng = np.random.default_rng(12)
    x = rng.normal(size=(90, 16)).astype(np.float32)
    plan, start = [], 0
    for size in random_chunking(len(x), rng, largest=8):
        plan.append((start, x[start : start + size]))
        start += size
    sequence_id = f"failover-{uuid.uuid4().hex}"

    def request(index: int) -> dict[str, Any]:
        offset, chunk = plan[index]
        return {
            "inputs": infer_inputs(chunk[None]),
            "sequence_id": sequence_id,
            "sequence_start": index == 0,
            "sequence_end": index == len(plan) - 1,
            "parameters": {"sequence_offset": offset},
        }

    outputs: list[np.ndarray] = []
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    cut = len(plan) // 2
    on_a = grpcclient.InferenceServerClient(a.grpc_address)
    on_a.start_stream(callback=lambda result, error: answers.put((result, error)))
    for index in range(cut + 1):
        on_a.async_stream_infer(MODEL, **request(index))
        if index == cut:
            a.kill()  # the chunk in flight may or may not have been applied
        result, error = answers.get(timeout=30)
        if error is None:
            outputs.append(result.as_numpy("outputs")[0])
        else:
            assert index == cut, error
    with contextlib.suppress(InferenceServerException):
        on_a.stop_stream(cancel_requests=True)
    on_a.close()

    resume = len(outputs)  # the first chunk without an answer, sent again with its offset
    with grpcclient.InferenceServerClient(b.grpc_address) as on_b:
        # A queue of its own: the cut stream may still report its end into the first one.
        answers_b: queue.Queue[tuple[Any, Any]] = queue.Queue()
        on_b.start_stream(callback=lambda result, error: answers_b.put((result, error)))
        for index in range(resume, len(plan)):
            on_b.async_stream_infer(MODEL, **request(index))
            result, error = answers_b.get(timeout=30)
            assert error is None, error
            parameters = result.get_response().parameters
            assert parameters["sequence_offset"].int64_param == plan[index][0]
            outputs.append(result.as_numpy("outputs")[0])
        on_b.stop_stream()

    with httpx.Client(base_url=b.url, timeout=30) as client:
        assert np.concatenate(outputs).tobytes() == predict(client, MODEL, x).tobytes()

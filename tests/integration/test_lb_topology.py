"""The compose topology without Docker: docker/nginx.conf (Debian's nginx) in front of two
`lstm-serve` processes sharing one redis-server, all on loopback."""

import json
import queue
import re
import shutil
import socketserver
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from service.settings import Settings
from service.store.embedded import EmbeddedRedis
from tests.models import DEMO_DIR
from tests.nginx import NginxProcess
from tests.processes import ServiceProcess
from tests.streaming import new_session, post_chunk, predict, random_chunking

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(),
        reason="nginx is not installed (apt-get install nginx; .ci/run installs it)",
    ),
]


def address(process: ServiceProcess) -> str:
    return f"127.0.0.1:{process.port}"


@pytest.fixture(scope="module")
def replicas(redis_server: EmbeddedRedis, tmp_path_factory) -> Iterator[list[ServiceProcess]]:
    """Two replicas on the demo models, with gRPC; a test may stop the second one."""
    logs = tmp_path_factory.mktemp("replicas")
    processes = [
        ServiceProcess(redis_server.url, DEMO_DIR, log_path=logs / f"api{i}.log", grpc=True)
        for i in (1, 2)
    ]
    try:
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(lambda p: p.start(timeout=180), processes))
        yield processes
    finally:
        for process in processes:
            process.stop()


def logged_request_ids(process: ServiceProcess) -> set[str]:
    """Request ids in a replica's JSON access log."""
    assert process.log_path is not None
    ids = set()
    for line in process.log_path.read_text().splitlines():
        if line.startswith("{") and '"request_id"' in line:
            ids.add(json.loads(line)["request_id"])
    return ids


def test_stream_through_the_load_balancer_is_bit_exact_on_both_replicas(replicas, tmp_path):
    rng = np.random.default_rng(2024)
    inputs = rng.normal(size=(360, 16)).astype(np.float32)
    sizes = random_chunking(len(inputs), rng, largest=12)
    half = len(sizes) // 2

    with (
        NginxProcess(tmp_path / "lb", [address(p) for p in replicas]) as lb,
        httpx.Client(base_url=lb.url, timeout=30) as client,
    ):
        full = predict(client, "sensor-lstm", inputs)
        session_id = new_session(client, "sensor-lstm")
        outputs, start = [], 0
        for i, size in enumerate(sizes):
            if i == half:
                # Any replica serves any chunk: lose one mid-stream and go on.
                served = {e["upstream"] for e in lb.access_entries() if e["method"] == "POST"}
                assert served == {address(p) for p in replicas}
                replicas[1].stop()
            request_id = f"chunk-{i}"
            chunk, headers = inputs[start : start + size], {"X-Request-ID": request_id}
            response = post_chunk(client, session_id, chunk, headers, offset=start)
            assert response.status_code == 200, response.text
            assert response.headers["X-Request-ID"] == request_id
            body = response.json()
            assert (body["offset"], body["steps"]) == (start, start + size)
            outputs.append(np.array(body["outputs"], dtype=np.float32))
            start += size
        chunks = lb.entries_of("chunk-", len(sizes))

    assert np.array_equal(np.concatenate(outputs), full)
    assert [e["request_id"] for e in chunks] == [f"chunk-{i}" for i in range(len(sizes))]
    assert {e["status"] for e in chunks} == {200}
    # After the stop every chunk reached the survivor, even when nginx first tried the
    # stopped replica (a refused connection: the POST was never sent, so it may move on).
    assert {e["upstream"].split(", ")[-1] for e in chunks[half:]} == {address(replicas[0])}
    # The replicas' own logs agree: each served chunks, and together all of them.
    by_replica = [logged_request_ids(p) & {e["request_id"] for e in chunks} for p in replicas]
    assert all(by_replica) and set.union(*by_replica) == {e["request_id"] for e in chunks}


class ClosingUpstream(socketserver.ThreadingTCPServer):
    """A replica that reads each request in full and closes without answering."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []  # (method, path, X-Request-ID)
        super().__init__(("127.0.0.1", 0), self.Handler)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            method, path, _ = self.rfile.readline().decode().split(" ", 2)
            headers = {}
            while (line := self.rfile.readline().decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.rfile.read(int(headers.get("content-length", 0)))
            server: ClosingUpstream = self.server  # type: ignore[assignment]
            server.received.append((method, path, headers.get("x-request-id", "")))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def test_a_post_the_first_replica_received_is_not_retried_on_another(replicas, tmp_path):
    survivor = replicas[0]
    stub = ClosingUpstream()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    # One worker, the stub first: the first request (a POST) goes to the stub for sure.
    lb = NginxProcess(tmp_path / "lb", [stub.address, address(survivor)], workers=1)
    statuses: dict[str, int] = {}
    try:
        with lb, httpx.Client(base_url=lb.url, timeout=30) as client:
            created = httpx.post(f"{survivor.url}/v1/models/seed-lstm/sessions")
            session_id = created.json()["session_id"]
            chunk = np.array([[0.0, 1.0], [1.0, 1.0]])  # no offset: appended where it is
            plan = ["POST", "GET", "GET", "GET", "POST", "GET", "POST", "GET", "POST"]
            for i, method in enumerate(plan):
                request_id = f"{method.lower()}-{i}"
                headers = {"X-Request-ID": request_id}
                if method == "POST":
                    response = post_chunk(client, session_id, chunk, headers)
                else:
                    response = client.get(f"/v1/sessions/{session_id}", headers=headers)
                assert response.headers["X-Request-ID"] == request_id
                statuses[request_id] = response.status_code
    finally:
        stub.shutdown()
        stub.server_close()

    stub_got = {request_id: method for method, _, request_id in stub.received}
    assert set(stub_got) <= set(statuses), "the client's X-Request-ID reaches the replica"
    assert "POST" in stub_got.values() and "GET" in stub_got.values(), stub.received
    for request_id, status in statuses.items():
        if request_id.startswith("post") and request_id in stub_got:
            assert status == 502, f"{request_id} reached the stub, then nginx resent it"
        else:
            assert status == 200, f"{request_id}: {status}"  # a GET is retried
    applied = sum(1 for r, s in statuses.items() if r.startswith("post") and s == 200)
    steps = httpx.get(f"{survivor.url}/v1/sessions/{session_id}").json()["steps"]
    assert steps == 2 * applied


def test_body_limit_matches_the_service_and_answers_in_its_error_format(replicas, tmp_path):
    limit = Settings().max_body_bytes  # the replicas run with the default
    small = b'{"inputs": [[0, 1]]}'
    with (
        NginxProcess(tmp_path / "lb", [address(replicas[0])]) as lb,
        httpx.Client(base_url=lb.url, timeout=60) as client,
    ):
        at_limit = small + b" " * (limit - len(small))
        response = client.post(
            "/v1/models/seed-lstm/predict",
            content=at_limit,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text

        response = client.post(
            "/v1/models/seed-lstm/predict",
            content=at_limit + b" ",
            headers={"Content-Type": "application/json", "X-Request-ID": "too-big"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["max_bytes"] == limit
    assert response.headers["X-Request-ID"] == "too-big"


def test_request_ids_are_generated_when_missing_or_malformed(replicas, tmp_path):
    with (
        NginxProcess(tmp_path / "lb", [address(replicas[0])]) as lb,
        httpx.Client(base_url=lb.url) as client,
    ):
        generated = [client.get("/healthz").headers["X-Request-ID"] for _ in range(2)]
        kept = client.get("/v1/models", headers={"X-Request-ID": "trace/a+b=c:1.2_3-4"})
        malformed = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert all(re.fullmatch("[0-9a-f]{32}", g) for g in generated), generated
    assert generated[0] != generated[1]
    assert kept.headers["X-Request-ID"] == "trace/a+b=c:1.2_3-4"
    assert "trace/a+b=c:1.2_3-4" in logged_request_ids(replicas[0])  # the replica used it too
    assert malformed.headers["X-Request-ID"] != "bad id\twith spaces"
    assert re.fullmatch("[0-9a-f]{32}", malformed.headers["X-Request-ID"])


def test_grpc_streams_and_calls_pass_the_load_balancer_over_http2(replicas, tmp_path):
    """nginx's gRPC server: a stream (one replica) and then unary calls (round-robin over
    the live replicas) carry one sequence, bit-identical to one full predict."""
    alive = [p for p in replicas if p.process.running]
    rng = np.random.default_rng(77)
    inputs = rng.normal(size=(60, 16)).astype(np.float32)
    sizes = random_chunking(40, rng, largest=9) + [5] * 4
    sequence_id = f"lb-{uuid.uuid4().hex}"
    outputs: list[np.ndarray] = []
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()

    def chunk(start: int, size: int) -> list[grpcclient.InferInput]:
        tensor = grpcclient.InferInput("inputs", [1, size, 16], "FP32")
        tensor.set_data_from_numpy(inputs[None, start : start + size])
        return [tensor]

    with (
        NginxProcess(
            tmp_path / "lb",
            [address(p) for p in alive],
            grpc_upstreams=[p.grpc_address for p in alive],
        ) as lb,
        grpcclient.InferenceServerClient(lb.grpc_address) as triton,
        httpx.Client(base_url=lb.url, timeout=30) as client,
    ):
        triton.start_stream(callback=lambda result, error: answers.put((result, error)))
        start = 0
        for index, size in enumerate(sizes[:-4]):
            triton.async_stream_infer(
                "sensor-lstm",
                chunk(start, size),
                sequence_id=sequence_id,
                sequence_start=index == 0,
            )
            start += size
        for _ in sizes[:-4]:
            result, error = answers.get(timeout=30)
            assert error is None, error
            outputs.append(result.as_numpy("outputs")[0])
        triton.stop_stream()
        for size in sizes[-4:]:
            result = triton.infer(
                "sensor-lstm",
                chunk(start, size),
                sequence_id=sequence_id,
                parameters={"sequence_offset": start},
                headers={"x-request-id": f"grpc-{start}"},
            )
            outputs.append(result.as_numpy("outputs")[0])
            start += size
        full = predict(client, "sensor-lstm", inputs)
        calls = lb.entries_of("grpc-", 4)

    assert np.concatenate(outputs).tobytes() == full.tobytes()
    assert [e["uri"] for e in calls] == ["/inference.GRPCInferenceService/ModelInfer"] * 4
    assert {e["upstream"] for e in calls} == {p.grpc_address for p in alive}

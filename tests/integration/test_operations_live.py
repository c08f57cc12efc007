"""Operations on real `lstm-serve` processes: the access log, metrics over several workers,
a streamed body over the limit, and the per-key session limit under concurrent creates."""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.metrics import value
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess

KEY = "live-key-5d2a71"
AUTH = {"Authorization": f"Bearer {KEY}"}
RACE_KEY = "race-key-77c0e1"
RACE_AUTH = {"Authorization": f"Bearer {RACE_KEY}"}


@pytest.fixture(scope="module")
def limited(redis_server, tmp_path_factory):
    """One worker, an API key, 4000-byte bodies and 3 sessions per key; its log file."""
    log = tmp_path_factory.mktemp("live") / "service.log"
    env = {
        "LSTM_API_KEYS": KEY,
        "LSTM_MAX_BODY_BYTES": "4000",
        "LSTM_MAX_SESSIONS_PER_KEY": "3",
    }
    with ServiceProcess(redis_server.url, DEMO_DIR, env=env, log_path=log) as service:
        yield service, log


def test_one_json_access_line_per_request_and_no_uvicorn_access_log(limited):
    service, log = limited
    ids = [f"live-{n}" for n in range(3)]
    for request_id in ids:
        response = httpx.get(
            f"{service.url}/v1/models/seed-lstm", headers={**AUTH, "X-Request-ID": request_id}
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == request_id
    # A line is written just after its response is sent: give the last one a moment.
    deadline = time.monotonic() + 10
    while ids[-1] not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = log.read_text().splitlines()
    for request_id in ids:
        mine = [line for line in lines if request_id in line]
        assert len(mine) == 1, mine
        entry = json.loads(mine[0])
        assert entry["route"] == "/v1/models/{model}" and entry["status"] == 200
    assert not [line for line in lines if "HTTP/1.1" in line]  # uvicorn's own access format


def test_a_chunked_body_over_the_limit_is_413_on_the_wire(limited):
    service, _ = limited
    session = httpx.post(f"{service.url}/v1/models/seed-lstm/sessions", headers=AUTH).json()
    path = f"/v1/sessions/{session['session_id']}/predict"
    body = ('{"inputs": [' + ",".join(["[0.25, 0.75]"] * 600) + "]}").encode()
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
        for i in range(0, len(body), 1000)
    )
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request + chunks + b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(payload)["error"]["code"] == "payload_too_large"
    after = httpx.get(f"{service.url}/v1/sessions/{session['session_id']}", headers=AUTH)
    assert after.json()["steps"] == 0


@pytest.fixture(scope="module")
def two_workers(redis_server):
    """`--workers 2`, another API key (so a fresh session count), 3 sessions per key."""
    env = {"LSTM_API_KEYS": RACE_KEY, "LSTM_MAX_SESSIONS_PER_KEY": "3"}
    with ServiceProcess(redis_server.url, DEMO_DIR, workers=2, env=env) as service:
        yield service


def test_concurrent_creates_never_pass_the_per_key_limit(two_workers):
    url = f"{two_workers.url}/v1/models/seed-lstm/sessions"

    def create(_: int) -> int:
        return httpx.post(url, headers=RACE_AUTH, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = sorted(pool.map(create, range(12)))
    assert statuses == [201] * 3 + [429] * 9


def test_metrics_sum_over_worker_processes(two_workers):
    """Each worker keeps its own counts in files; a scrape answered by any worker sums them."""
    url = two_workers.url
    chunk = {"inputs": [[0.5, 0.5], [1.0, 0.0], [0.0, 0.0]]}
    close = {"Connection": "close"}  # a new connection each time, taken by either worker
    version = httpx.get(f"{url}/v1/models/seed-lstm", headers=RACE_AUTH).json()["version"]
    before = httpx.get(f"{url}/metrics").text
    for _ in range(40):
        response = httpx.post(
            f"{url}/v1/models/seed-lstm/predict", json=chunk, headers={**close, **RACE_AUTH}
        )
        assert response.status_code == 200
    predict = {"method": "POST", "route": "/v1/models/{model}/predict", "status": "200"}
    # A request is counted just after its response is sent: let the last one land.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if value(httpx.get(f"{url}/metrics").text, "lstm_http_requests_total", **predict) >= 40:
            break
        time.sleep(0.05)
    scrapes = [httpx.get(f"{url}/metrics", headers=close).text for _ in range(6)]
    for text in scrapes:
        assert (
            value(text, "lstm_timesteps_total", model="seed-lstm")
            == value(before, "lstm_timesteps_total", model="seed-lstm") + 40 * 3
        )
        assert value(text, "lstm_http_requests_total", **predict) == 40
        assert value(text, "lstm_model_loaded", model="seed-lstm", version=version) == 1

"""One JSON access-log line per request, with a request id the response returns too."""

import json
import logging
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from tests.apps import app_with
from tests.streaming import new_session, send_chunk


@pytest.fixture
def access_lines(caplog):
    caplog.set_level(logging.INFO, logger="lstm.access")

    def lines() -> list[dict]:
        return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lstm.access"]

    return lines


def test_each_request_logs_one_line_with_its_route_template(client, access_lines):
    session_id = new_session(client, "seed-lstm")
    response = client.post(
        f"/v1/sessions/{session_id}/predict",
        json={"inputs": [[0.5, 0.25]]},
        headers={"X-Request-ID": "trace-42.a"},
    )
    assert response.headers["x-request-id"] == "trace-42.a"
    created, chunk = access_lines()
    assert created["route"] == "/v1/models/{model}/sessions" and created["status"] == 201
    assert created["model"] == "seed-lstm"
    assert chunk["method"] == "POST"
    assert chunk["route"] == "/v1/sessions/{session_id}/predict"
    assert chunk["status"] == 200
    assert chunk["session_id"] == session_id
    assert chunk["request_id"] == "trace-42.a"
    assert isinstance(chunk["duration_ms"], float) and chunk["duration_ms"] > 0
    logged_at = datetime.fromisoformat(chunk["ts"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - logged_at).total_seconds()) < 60
    assert "error" not in chunk


def test_a_request_id_is_generated_when_missing_or_unusable(client, access_lines):
    plain = client.get("/healthz")
    hostile = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    injected = client.get("/healthz", headers={"X-Request-ID": 'a"b'})
    ids = [r.headers["x-request-id"] for r in (plain, hostile, injected)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in ids)
    assert len(set(ids)) == 3
    assert [line["request_id"] for line in access_lines()] == ids


def test_errors_carry_their_code_and_tensors_never_appear(client, access_lines):
    session_id = new_session(client, "seed-lstm")
    marker = 0.123456789
    send_chunk(client, session_id, np.array([[marker, marker]], dtype=np.float32))
    bad = client.post(f"/v1/sessions/{session_id}/predict", json={"inputs": [[marker] * 3]})
    assert bad.status_code == 422
    lines = access_lines()
    assert lines[-1]["error"] == "invalid_input" and lines[-1]["status"] == 422
    for line in lines:
        assert "0.1234" not in json.dumps(line)
        assert set(line) <= {
            "ts", "method", "route", "status", "duration_ms", "request_id",
            "session_id", "model", "key_id", "error",
        }  # fmt: skip


def test_access_log_can_be_turned_off(client, settings, access_lines):
    with app_with(client, settings, access_log=False) as other:
        assert other.get("/healthz").headers["x-request-id"]
    assert access_lines() == []


# A hostile client's 60 KB name must not come back twice in the answer, nor fill the log.
LONG_NAME = "m" * 60_000
LONG_ID_ROUTES = [
    ("POST", f"/v1/models/{LONG_NAME}/predict", {"inputs": [[0, 0]]}),
    ("POST", f"/v1/models/{LONG_NAME}/sessions", {}),
    ("GET", f"/v1/sessions/{LONG_NAME}", None),
    ("GET", f"/v2/models/{LONG_NAME}", None),
    ("GET", f"/v2/models/seed-lstm/versions/{LONG_NAME}", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), LONG_ID_ROUTES, ids=[p[:30] for _, p, _ in LONG_ID_ROUTES]
)
def test_a_long_id_is_cut_short_in_the_error_and_the_log(client, access_lines, method, path, body):
    response = client.request(method, path, json=body)
    assert response.status_code in (404, 422), response.text
    assert len(response.content) < 2_000, response.text[:200]
    (line,) = access_lines()
    assert len(json.dumps(line)) < 2_000
    assert all(len(str(value)) <= 200 for value in line.values())

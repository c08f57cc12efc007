"""A WebSocket stream in the metrics and the access log: every chunk counted by outcome,
one line when the stream opens and one when it closes, with what it answered."""

import json
import logging

import numpy as np
import pytest
from starlette.testclient import WebSocketDenialResponse

from tests.api.test_metrics import scrape
from tests.metrics import value
from tests.streaming import new_session

SEED = "seed-lstm"
CHUNKS = "lstm_stream_chunks_total"


@pytest.fixture
def stream_lines(caplog):
    caplog.set_level(logging.INFO, logger="lstm.access")

    def lines() -> list[dict]:
        found = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lstm.access"]
        return [line for line in found if line["route"] == "/v1/sessions/{session_id}/stream"]

    return lines


def counts(text: str) -> dict[str, float]:
    return {
        "applied": value(text, CHUNKS, transport="websocket", outcome="applied"),
        "replayed": value(text, CHUNKS, transport="websocket", outcome="replayed"),
        "offset_conflict": value(text, CHUNKS, transport="websocket", outcome="offset_conflict"),
        "errors": value(text, "lstm_errors_total", code="offset_conflict"),
        "open": value(text, "lstm_streams_open", transport="websocket"),
    }


def test_each_chunk_is_counted_and_the_close_line_says_what_the_stream_answered(
    client, stream_lines
):
    session_id = new_session(client, SEED)
    rows = np.array([[0.5, 0.25], [1.0, -1.0]], dtype=np.float32)
    before = counts(scrape(client))
    with client.websocket_connect(
        f"/v1/sessions/{session_id}/stream?offset=0", headers={"X-Request-ID": "ws-trace-7"}
    ) as ws:
        assert (b"x-request-id", b"ws-trace-7") in ws.extra_headers
        ws.send_bytes(rows[:1].tobytes())
        ws.receive_bytes()
        ws.send_bytes(rows[1:].tobytes())
        ws.receive_bytes()
        ws.send_text(json.dumps({"inputs": rows[1:].tolist(), "offset": 1}))  # a retry
        assert ws.receive_json()["replayed"] is True
        ws.send_text(json.dumps({"inputs": rows[1:].tolist(), "offset": 7}))
        assert ws.receive_json()["error"]["code"] == "offset_conflict"
        during = counts(scrape(client))
    after = counts(scrape(client))

    assert during["open"] == before["open"] + 1
    assert after == {
        "applied": before["applied"] + 2,
        "replayed": before["replayed"] + 1,
        "offset_conflict": before["offset_conflict"] + 1,
        "errors": before["errors"] + 1,
        "open": before["open"],
    }
    opened, closed = stream_lines()
    for line in (opened, closed):
        assert (line["method"], line["status"], line["session_id"]) == ("GET", 101, session_id)
        assert line["request_id"] == "ws-trace-7"
    assert opened["event"] == "open" and "chunks" not in opened
    assert closed["event"] == "close"
    assert (closed["chunks"], closed["replayed"], closed["errors"]) == (3, 1, 1)
    assert closed["close_code"] == 1000
    assert closed["duration_ms"] > 0


def test_a_refused_stream_is_logged_and_counted_with_its_error(client, stream_lines):
    before = value(scrape(client), "lstm_errors_total", code="session_not_found")
    with pytest.raises(WebSocketDenialResponse):
        client.websocket_connect("/v1/sessions/nobody-here/stream").__enter__()
    after = value(scrape(client), "lstm_errors_total", code="session_not_found")

    assert after == before + 1
    (refused,) = stream_lines()
    assert refused["event"] == "refused"
    assert (refused["status"], refused["error"]) == (404, "session_not_found")
    assert refused["session_id"] == "nobody-here"

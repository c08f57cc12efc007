"""/metrics: Prometheus text that counts what the service did, labelled by route template."""

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.metrics import samples, value
from tests.streaming import new_session, send_chunk


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def test_exposition_parses_and_lists_the_served_models(client):
    text = scrape(client)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "lstm_http_requests",
        "lstm_http_request_duration_seconds",
        "lstm_timesteps",
        "lstm_runner_duration_seconds",
        "lstm_redis_duration_seconds",
        "lstm_sessions",
        "lstm_errors",
        "lstm_model_loaded",
        "lstm_event_loop_lag_seconds",
        "lstm_event_loop_own_lag_seconds",
    ):
        assert name in families, name
    loaded = {
        (s.labels["model"], s.labels["version"])
        for s in families["lstm_model_loaded"].samples
        if s.value == 1
    }
    served = {(m["name"], m["version"]) for m in client.get("/v1/models").json()["models"]}
    assert loaded == served


def test_a_stream_is_counted_by_model_route_and_redis_operation(client):
    before = scrape(client)
    session_id = new_session(client, "seed-lstm")
    chunks = [np.full((3, 2), 0.25, np.float32), np.full((5, 2), -0.5, np.float32)]
    for offset, chunk in zip((0, 3), chunks, strict=True):
        send_chunk(client, session_id, chunk, offset=offset)
    # A retry of the last chunk is recomputed from the state stored before it: it runs again.
    assert send_chunk(client, session_id, chunks[1], offset=3)["replayed"] is True
    assert client.post(f"/v1/sessions/{session_id}/reset").status_code == 200
    assert client.delete(f"/v1/sessions/{session_id}").status_code == 204
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("lstm_timesteps_total", model="seed-lstm") == 3 + 5 + 5
    assert delta("lstm_runner_duration_seconds_count", model="seed-lstm") == 3
    assert delta("lstm_runner_duration_seconds_sum", model="seed-lstm") > 0
    route = "/v1/sessions/{session_id}/predict"
    assert delta("lstm_http_requests_total", method="POST", route=route, status="200") == 3
    assert (
        delta("lstm_http_request_duration_seconds_count", method="POST", route=route, status="200")
        == 3
    )
    for event in ("created", "reset", "deleted"):
        assert delta("lstm_sessions_total", event=event) == 1, event
    # Two chunks and a reset wrote the session, each a compare-and-set against the record
    # this process created or last wrote; only the replay, an answer no write checks, read it.
    assert delta("lstm_redis_duration_seconds_count", operation="get") == 1
    assert delta("lstm_redis_duration_seconds_count", operation="compare_and_set") == 3
    assert delta("lstm_redis_duration_seconds_count", operation="create") == 1
    assert delta("lstm_redis_duration_seconds_count", operation="delete") == 1
    # Labels carry route templates, never the ids in raw paths.
    assert session_id not in after


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda c: c.get("/v1/sessions/no-such-session"), "session_not_found"),
        (
            lambda c: c.post("/v1/models/seed-lstm/predict", json={"inputs": [[1.0]]}),
            "invalid_input",
        ),
        (lambda c: c.get("/v1/models/nope"), "model_not_found"),
        (lambda c: c.get("/no/such/route"), "not_found"),
    ],
)
def test_errors_are_counted_by_code(client, call, code):
    before = value(scrape(client), "lstm_errors_total", code=code)
    response = call(client)
    assert response.json()["error"]["code"] == code
    assert value(scrape(client), "lstm_errors_total", code=code) == before + 1


def test_unrouted_paths_share_one_label(client):
    client.get("/random/path/one")
    client.get("/random/path/two")
    routes = {dict(labels).get("route") for (_, labels) in samples(scrape(client))}
    assert "<unmatched>" in routes
    assert not any(route and route.startswith("/random") for route in routes)

"""HTTP-level refusals found by API fuzzing: stable codes and honest headers."""


def test_a_body_that_is_not_utf8_is_invalid_input(client):
    session_id = client.post("/v1/models/seed-lstm/sessions").json()["session_id"]
    response = client.post(
        f"/v1/sessions/{session_id}/predict",
        content=b'{"inputs": [[0.5, \xff\xfe]]}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"
    assert client.get(f"/v1/sessions/{session_id}").json()["steps"] == 0


def test_405_lists_every_method_of_the_path(client):
    response = client.request("PUT", "/v1/sessions/some-session")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    documented = client.get("/openapi.json").json()["paths"]["/v1/sessions/{session_id}"]
    assert allowed == {method.upper() for method in documented} | {"HEAD"}

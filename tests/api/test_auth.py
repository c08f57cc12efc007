"""API keys: /v1 and /v2 need a known bearer key, and each key sees only its own sessions."""

import hashlib
import re

import numpy as np
import pytest
import redis

from service.main import create_app
from tests.apps import app_with, configured
from tests.streaming import post_chunk

KEYS = ("key-one-7f3a9c", "key-two-b81e44")
OPEN_PATHS = ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/v2/health/live"]
SEED_V2 = {
    "inputs": [{"name": "inputs", "datatype": "FP32", "shape": [1, 2, 2], "data": [0, 0, 0, 1]}]
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secured(client, settings):
    """The real app with two API keys (models shared with the `client` app)."""
    with app_with(client, settings, api_keys=",".join(KEYS)) as test_client:
        yield test_client


def assert_unauthorized_v1(response):
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("not-a-key"),
        bearer(KEYS[0][:-1]),
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": "Bearer"},
        {"Authorization": KEYS[0]},
    ],
    ids=["missing", "unknown", "prefix of a key", "basic scheme", "empty", "no scheme"],
)
def test_v1_without_a_known_key_is_401(secured, headers):
    assert_unauthorized_v1(secured.get("/v1/models", headers=headers))
    assert_unauthorized_v1(
        secured.post("/v1/models/seed-lstm/predict", json={"inputs": [[0, 0]]}, headers=headers)
    )


def test_v2_without_a_key_is_401_in_the_protocols_shape(secured):
    response = secured.post("/v2/models/seed-lstm/infer", json=SEED_V2)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(response.json()["error"], str)
    ok = secured.post("/v2/models/seed-lstm/infer", json=SEED_V2, headers=bearer(KEYS[1]))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_health_metrics_and_docs_stay_open(secured, path):
    assert secured.get(path).status_code == 200


def test_each_key_sees_only_its_own_sessions(secured):
    one, two = bearer(KEYS[0]), bearer(KEYS[1])
    created = secured.post("/v1/models/seed-lstm/sessions", headers=one)
    assert created.status_code == 201
    session_id = created.json()["session_id"]
    chunk = np.array([[0.0, 1.0]])
    for response in (
        secured.get(f"/v1/sessions/{session_id}", headers=two),
        post_chunk(secured, session_id, chunk, headers=two),
        secured.post(f"/v1/sessions/{session_id}/reset", headers=two),
        secured.delete(f"/v1/sessions/{session_id}", headers=two),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "session_not_found"
    # Untouched by the other key's attempts.
    assert secured.get(f"/v1/sessions/{session_id}", headers=one).json()["steps"] == 0
    assert post_chunk(secured, session_id, chunk, headers=one).status_code == 200


def test_the_same_session_id_under_two_keys_is_two_sessions(secured):
    for key in KEYS:
        response = secured.post(
            "/v1/models/seed-lstm/sessions", json={"session_id": "shared-name"}, headers=bearer(key)
        )
        assert response.status_code == 201, response.text
    sent = post_chunk(secured, "shared-name", np.ones((3, 2)), headers=bearer(KEYS[0]))
    assert sent.status_code == 200, sent.text
    steps = [
        secured.get("/v1/sessions/shared-name", headers=bearer(key)).json()["steps"] for key in KEYS
    ]
    assert steps == [3, 0]


def test_redis_keys_hold_a_digest_of_the_api_key_never_the_key(secured, redis_server):
    created = secured.post("/v1/models/seed-lstm/sessions", headers=bearer(KEYS[1]))
    session_id = created.json()["session_id"]
    client = redis.Redis.from_url(redis_server.url)
    try:
        names = [name.decode() for name in client.scan_iter(match=f"*{session_id}*")]
        everything = [name.decode() for name in client.scan_iter(count=1000)]
    finally:
        client.close()
    expected = hashlib.sha256(KEYS[1].encode()).hexdigest()[:16]
    assert len(names) == 1 and f":{expected}:" in names[0]
    assert not any(key in name for name in everything for key in KEYS)


def test_keys_file_with_comment_lines(client, settings, tmp_path):
    path = tmp_path / "keys"
    path.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2\n  # team b\n")
    with app_with(client, settings, api_keys_file=path) as test_client:
        for key in ("file-key-1", "file-key-2"):
            assert test_client.get("/v1/models", headers=bearer(key)).status_code == 200
        assert_unauthorized_v1(test_client.get("/v1/models", headers=bearer("# rotated 2026-11")))


# A key is sent as a bearer token (RFC 6750's token68). A '#' or ',' inside one used to cut
# it silently into another key (the file's comment sign, the variable's separator).
@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("file-key-1#team-a", "line 2"),
        ("file-key-1  # team a", "line 2"),
        ("file key", "line 2"),
        ("key,with-comma", "line 2"),
    ],
    ids=["hash inside", "trailing comment", "space inside", "comma inside"],
)
def test_a_keys_file_line_that_is_not_one_key_refuses_to_start(settings, tmp_path, line, where):
    path = tmp_path / "keys"
    path.write_text(f"# keys\n{line}\n")
    with pytest.raises(ValueError, match=f"{where} of {path}") as refused:
        create_app(configured(settings, api_keys_file=path))
    assert "file-key-1" not in str(refused.value), "the message must not reveal the key"


@pytest.mark.parametrize("keys", ["good-key-1,bad key", "good-key-1,bad#key", "good-key-1,a;b"])
def test_a_keys_variable_entry_that_is_not_one_key_refuses_to_start(settings, keys):
    with pytest.raises(ValueError, match="entry 2 of LSTM_API_KEYS"):
        create_app(configured(settings, api_keys=keys))


def test_a_key_setting_that_names_no_key_refuses_to_start(settings, tmp_path):
    empty = tmp_path / "keys"
    empty.write_text("# nothing yet\n")
    for update in ({"api_keys": " , "}, {"api_keys_file": empty}):
        with pytest.raises(ValueError, match="names no API key"):
            create_app(configured(settings, **update))


def test_openapi_declares_the_scheme_and_every_protected_operation_answers_401(secured):
    document = secured.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert list(schemes.values()) == [
        {**next(iter(schemes.values())), "type": "http", "scheme": "bearer"}
    ]
    checked = 0
    for path, item in document["paths"].items():
        for method, operation in item.items():
            protected = re.match(r"^/v[12](/|$)", path) and not path.startswith("/v2/health")
            assert bool(operation.get("security")) == bool(protected), (method, path)
            if not protected:
                continue
            assert "401" in operation["responses"], (method, path)
            url = re.sub(r"\{[^}]+\}", "seed-lstm", path)
            response = secured.request(method.upper(), url, json={})
            assert response.status_code == 401, (method, path)
            checked += 1
    assert checked >= 10


def test_without_keys_the_document_declares_no_security(client):
    document = client.get("/openapi.json").json()
    assert "securitySchemes" not in document.get("components", {})
    assert client.get("/v1/models").status_code == 200

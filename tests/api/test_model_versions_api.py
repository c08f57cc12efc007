"""Sessions pinned to a version: chosen at create (`"version"`, or `/v2/.../versions/{v}`),
kept through chunks, moved by reset; each version listed with its own shape."""

import json
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.api.test_v2 import json_outputs, json_request
from tests.streaming import new_session, send_chunk
from tests.unit.test_repository import put

MODEL = "two-versions"


@pytest.fixture(scope="module")
def client(redis_server, tmp_path_factory) -> Iterator[TestClient]:
    repo = tmp_path_factory.mktemp("versions")
    put(repo, MODEL, 1, seed=1)
    put(repo, MODEL, 2, seed=2)
    with TestClient(create_app(Settings(redis_url=redis_server.url, model_dir=repo))) as client:
        yield client


def test_model_info_lists_every_version(client):
    info = client.get(f"/v1/models/{MODEL}").json()
    assert info["version_number"] == 2
    assert [v["version_number"] for v in info["versions"]] == [1, 2]
    assert info["versions"][1]["version"] == info["version"]
    assert info["versions"][0]["version"] != info["version"]
    assert info["refused_versions"] == []


def test_a_session_stays_on_its_version_and_a_reset_moves_it(client):
    info = client.get(f"/v1/models/{MODEL}").json()
    v1, v2 = (v["version"] for v in info["versions"])
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    on_v1 = new_session(client, MODEL, version=1)
    on_v2 = new_session(client, MODEL)
    first = send_chunk(client, on_v1, x)["outputs"]
    assert first != send_chunk(client, on_v2, x)["outputs"]
    assert client.get(f"/v1/sessions/{on_v1}").json()["model_version"] == v1
    stateless = client.post(f"/v1/models/{MODEL}/predict?version=1", json={"inputs": x.tolist()})
    assert stateless.json()["model_version"] == v1 and stateless.json()["outputs"] == first

    pinned_reset = client.post(f"/v1/sessions/{on_v1}/reset", json={"version": 1}).json()
    assert pinned_reset["model_version"] == v1
    assert send_chunk(client, on_v1, x)["outputs"] == first
    assert client.post(f"/v1/sessions/{on_v1}/reset").json()["model_version"] == v2


@pytest.mark.parametrize(("version", "status"), [(3, 404), (0, 422), ("1", 422)])
def test_a_version_that_is_not_served_is_refused(client, version, status):
    response = client.post(f"/v1/models/{MODEL}/sessions", json={"version": version})
    assert response.status_code == status
    code = response.json()["error"]["code"]
    assert code == ("model_not_found" if status == 404 else "invalid_input")


def test_a_v2_sequence_started_on_a_version_runs_on_it(client):
    x = np.random.default_rng(1).normal(size=(1, 4, 2)).astype(np.float32)
    body = json_request(x, parameters={"sequence_id": "pinned-7", "sequence_start": True})
    response = client.post(f"/v2/models/{MODEL}/versions/1/infer", content=json.dumps(body))
    assert response.status_code == 200, response.text
    native = send_chunk(client, new_session(client, MODEL, version=1), x[0])["outputs"]
    assert np.array_equal(json_outputs(response)[0], np.array(native, dtype=np.float32))

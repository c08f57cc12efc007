"""The question's model, written in Keras 2 (`tf_keras`), served through the API: the
published vector in every chunking, from `.h5` and `tf_keras` `.keras` files alike."""

from collections.abc import Iterator
from itertools import product

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.keras2_models import SEED_INPUTS, SEED_PUBLISHED, SEED_VARIANTS, save
from tests.streaming import new_session, predict, stream

CHUNKINGS = [[1, 1, 1, 1], [2, 2], [4], [1, 3], [3, 1], [1, 2, 1]]


@pytest.fixture(scope="module")
def keras2_client(redis_server, tmp_path_factory) -> Iterator[TestClient]:
    model_dir = save(tmp_path_factory.mktemp("keras2-api"), SEED_VARIANTS)
    settings = Settings(redis_url=redis_server.url, model_dir=model_dir)
    with TestClient(create_app(settings)) as client:
        yield client


def test_every_keras2_seed_file_is_served(keras2_client):
    listing = keras2_client.get("/v1/models").json()
    assert listing["refused"] == []
    assert sorted(m["name"] for m in listing["models"]) == sorted(
        name.rsplit(".", 1)[0] for name in SEED_VARIANTS
    )


@pytest.mark.parametrize(("file_name", "sizes"), list(product(sorted(SEED_VARIANTS), CHUNKINGS)))
def test_the_published_vector_in_every_chunking(keras2_client, file_name, sizes):
    model = file_name.rsplit(".", 1)[0]
    session_id = new_session(keras2_client, model)
    outputs = np.concatenate(stream(keras2_client, session_id, SEED_INPUTS, sizes))[:, 0]
    np.testing.assert_allclose(outputs, SEED_PUBLISHED, atol=1e-7, rtol=0)
    assert np.array_equal(outputs, predict(keras2_client, model, SEED_INPUTS)[:, 0])

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import service  # noqa: F401  (environment defaults before TensorFlow loads)
from service.main import create_app
from service.settings import Settings
from service.store.embedded import EmbeddedRedis
from tests.models import DEMO_DIR, TEST_MODELS, write_models

# No app or `lstm-serve` a test starts binds the default gRPC port (8001) behind its back:
# the tests that want gRPC ask for it on a free port.
os.environ["LSTM_GRPC_PORT"] = "0"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server process on a free loopback port, for the whole run."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models plus the test models, as .keras files."""
    directory = tmp_path_factory.mktemp("models")
    for path in DEMO_DIR.glob("*.keras"):
        shutil.copy(path, directory / path.name)
    return write_models(directory, TEST_MODELS)


@pytest.fixture(scope="session")
def settings(redis_server: EmbeddedRedis, model_dir: Path) -> Settings:
    return Settings(redis_url=redis_server.url, model_dir=model_dir, max_chunk_steps=2000)


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app (real models, real Redis) for the whole run."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client

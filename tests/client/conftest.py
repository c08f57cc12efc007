import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store.embedded import EmbeddedRedis
from tests.models import DEMO_DIR
from tests.processes import ServiceProcess

# client/ is its own distribution; the tests import it from the source tree.
CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))


@pytest.fixture(scope="session")
def served(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """One real `lstm-serve` with the demo models, on loopback, for the client tests."""
    log = tmp_path_factory.mktemp("served") / "serve.log"
    with ServiceProcess(redis_server.url, DEMO_DIR, log_path=log) as process:
        yield process

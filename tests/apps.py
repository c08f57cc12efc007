"""The real app under other settings, reusing the models the session's `client` loaded."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings


def configured(settings: Settings, **changes: Any) -> Settings:
    """`settings` with `changes`, validated as if they came from the environment."""
    return Settings.model_validate({**settings.model_dump(), **changes})


@contextmanager
def app_with(client: TestClient, settings: Settings, **changes: Any) -> Iterator[TestClient]:
    app = create_app(configured(settings, **changes), registry=client.app.state.sessions.models)
    with TestClient(app) as test_client:
        yield test_client

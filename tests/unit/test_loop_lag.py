"""The event-loop lag probe sees the loop held, the GIL switch interval setting is applied
and validated, and nothing long is left for the first request to do on the loop."""

import asyncio
import sys
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.loop_lag import cpu_wait_ns, probe_loop_lag
from service.main import create_app
from service.settings import Settings

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="schedstat")


def test_a_loop_held_by_a_callback_shows_as_lag():
    """A callback that holds the loop for 50 ms makes the timer due meanwhile run at least
    50 ms less one interval late; the own part never exceeds the lag."""
    seen: list[tuple[float, float | None]] = []

    async def scenario() -> None:
        probe = asyncio.create_task(probe_loop_lag(0.005, lambda *lag: seen.append(lag)))
        await asyncio.sleep(0.02)
        time.sleep(0.05)  # holds the loop, as a long callback would
        await asyncio.sleep(0.02)
        probe.cancel()

    asyncio.run(scenario())
    assert max(lag for lag, _ in seen) >= 0.05 - 0.005
    assert all(own is None or 0 <= own <= lag for lag, own in seen)


@linux_only
def test_the_cpu_wait_is_read_for_the_calling_thread():
    first = cpu_wait_ns()
    assert isinstance(first, int)
    second = cpu_wait_ns()
    assert second is not None and second >= first


def test_the_switch_interval_is_applied_by_the_app(settings):
    before = sys.getswitchinterval()
    try:
        app = create_app(settings.model_copy(update={"grpc_port": 0, "gil_switch_interval_ms": 2}))
        with TestClient(app):
            assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.parametrize("value", [0, -1, 101])
def test_a_switch_interval_outside_its_range_is_refused(value):
    with pytest.raises(ValidationError, match="gil_switch_interval_ms"):
        Settings(gil_switch_interval_ms=value)


def test_the_openapi_document_is_built_at_startup_not_by_the_first_request(settings):
    app = create_app(settings.model_copy(update={"grpc_port": 0}))
    assert app.openapi_schema is None
    with TestClient(app):
        assert app.openapi_schema is not None  # no request yet

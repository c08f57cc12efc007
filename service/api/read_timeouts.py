"""Deadlines on reading a request, which uvicorn does not have: without them a client that
sends half a request's headers or body holds its connection (and the app's wait) forever.

One subclass per uvicorn HTTP implementation: httptools (the default, ~20% less CPU per
small request) and h11 (pure Python, where httptools is not installed)."""

import asyncio
import functools
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

HttpImplementation = Literal["auto", "httptools", "h11"]


@functools.cache
def read_timeouts() -> tuple[float, float]:
    """(headers, body) seconds; read once per worker process, from the same environment."""
    settings = Settings()
    return settings.header_timeout_seconds, settings.body_timeout_seconds


class _ReadDeadline:
    """One timer per connection; `_expired` closes the connection unless the app, not
    the client, is the one behind (reading paused because the app has not taken the body)."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: Any

    def _start_deadlines(self) -> None:
        self.header_timeout, self.body_timeout = read_timeouts()
        self._read_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._watch()  # a pipelined request may have started

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _watch(self) -> None:
        """Arm, re-arm or disarm the timer for where the parser is in a request."""
        raise NotImplementedError

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._expired, seconds)

    def _arm_header(self) -> None:
        if self._read_timer is None:
            self._arm(self.header_timeout)  # the whole header, from its first byte

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _expired(self, seconds: float) -> None:
        self._read_timer = None
        if self.flow.read_paused:
            # The app has not taken what was already sent: the client is not the one waiting.
            self._arm(seconds)
            return
        if not self.transport.is_closing():
            self.transport.close()


class TimedH11Protocol(_ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose client takes longer than
    `header_timeout_seconds` to send a request's headers (counted from connecting or from
    the request's first byte) or pauses longer than `body_timeout_seconds` within its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_deadlines()

    def _watch(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm(self.body_timeout)  # a pause, not the whole body: re-armed per read
        elif state is h11.IDLE and self.conn.trailing_data[0]:
            self._arm_header()
        else:
            self._disarm()  # read in full (or failed): the keep-alive timeout takes over


def http_protocol(implementation: HttpImplementation = "auto") -> type[Any]:
    """The uvicorn HTTP protocol class with read deadlines: httptools when installed (or
    asked for), else h11."""
    if implementation == "h11":
        return TimedH11Protocol
    try:
        from service.api.read_timeouts_httptools import TimedHttpToolsProtocol
    except ImportError:
        if implementation == "httptools":
            raise
        return TimedH11Protocol
    return TimedHttpToolsProtocol

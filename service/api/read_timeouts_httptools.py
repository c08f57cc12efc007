"""The read deadlines of `read_timeouts` on uvicorn's httptools protocol (imported only
where httptools is installed)."""

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.read_timeouts import _ReadDeadline

# h11 refuses a request line and headers over this (uvicorn answers 400); httptools has no
# limit of its own, so a client could grow one request's headers for as long as the
# header deadline lets it.
MAX_HEADER_BYTES = 16 * 1024


class HeadersTooLarge(Exception):
    """Raised in a parser callback: httptools turns it into a parser error, answered 400."""


class TimedHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol with the same deadlines as `TimedH11Protocol`: a
    request's headers within `header_timeout_seconds` (from connecting or from its first
    byte), no pause longer than `body_timeout_seconds` within its body."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_deadlines()
        self._reading = "idle"  # "headers", "body": where the parser is in a request
        self._upgraded = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = "headers"
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            raise HeadersTooLarge

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._reading = "body"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = "idle"

    def handle_websocket_upgrade(self) -> None:
        self._upgraded = True  # the WebSocket protocol owns the connection from here
        self._disarm()
        super().handle_websocket_upgrade()

    def _watch(self) -> None:
        if self._upgraded or self._reading == "idle":
            self._disarm()  # read in full: the keep-alive timeout takes over
        elif self._reading == "body":
            self._arm(self.body_timeout)  # a pause, not the whole body: re-armed per read
        elif self.cycle is None or self.cycle.response_complete:
            self._arm_header()
        else:
            # A pipelined request's headers behind an answer still being sent: timed from
            # that answer's end, as with h11, which only reads them then.
            self._disarm()

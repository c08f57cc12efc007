"""uvicorn's sans-I/O WebSocket protocol with a short path for whole data frames.

A stream's chunk is one small binary or text frame each way. uvicorn hands every frame to
`websockets`' generator-based parser (a dozen generator steps, a frame object, an event
list) and every answer to its frame builder; here a complete, final, unfragmented data
frame is cut from the bytes received and its answer framed directly. Everything else
(the handshake, control frames, fragments, compressed frames, anything malformed or too
large, the closing handshake) goes to `websockets` as before, and only ever in whole
frames, so its parser is at a frame boundary whenever the short path cuts the next one.
"""

import asyncio
import struct
from collections import deque
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import OPEN
from websockets.streams import StreamReader

try:  # `websockets`' C unmasking, as its own parser uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

_FIN = 0x80
_RSV = 0x70
_OPCODE = 0x0F
_TEXT, _BINARY = 0x1, 0x2
_MASKED = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_LENGTH_16, _LENGTH_64 = 126, 127


def _frame_head(opcode: int, size: int) -> bytes:
    """A server frame's header (final, unmasked)."""
    if size < _LENGTH_16:
        return bytes((_FIN | opcode, size))
    if size < 1 << 16:
        return bytes((_FIN | opcode, _LENGTH_16)) + _U16.pack(size)
    return bytes((_FIN | opcode, _LENGTH_64)) + _U64.pack(size)


class _Inbox:
    """The messages for the app, in order: the part of `asyncio.Queue` uvicorn uses, without
    its size bound, putters and loop lookup per `get` (one message each way per chunk)."""

    __slots__ = ("_loop", "_waiters", "messages")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.messages: deque[Any] = deque()
        self._waiters: deque[asyncio.Future[Any]] = deque()

    def put_nowait(self, message: Any) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(message)
                return
        self.messages.append(message)

    def empty(self) -> bool:
        return not self.messages

    async def get(self) -> Any:
        if self.messages:
            return self.messages.popleft()
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.messages.appendleft(waiter.result())  # given, not taken: keep it first
            raise


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """Whole data frames in and out without `websockets`' parser and frame objects."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox(self.loop)  # type: ignore[assignment]
        self._short = False  # the short path is on (decided once, see `_may_go_short`)
        self._given_up = False  # everything goes to `websockets` from here on
        self._partial = bytearray()  # the start of a frame not yet received whole
        self._wanted = 0  # bytes `_partial` must reach before it holds a whole frame

    def data_received(self, data: bytes) -> None:
        if not self._short and not self._may_go_short():
            super().data_received(data)
            return
        if self._partial:
            self._partial += data  # in place: a large frame arrives in many reads
            if len(self._partial) < self._wanted:
                return
            data, self._partial = bytes(self._partial), bytearray()
        limit = self.conn.max_message_size
        size, at = len(data), 0
        self._wanted = 0
        while size - at >= 2:
            head, length = data[at], data[at + 1]
            masked, length = length & _MASKED, length & 0x7F
            start = at + 6  # after the 2-byte header and the 4-byte mask
            if length == _LENGTH_16:
                if size - at < 4:
                    break
                (length,) = _U16.unpack_from(data, at + 2)
                start += 2
            elif length == _LENGTH_64:
                if size - at < 10:
                    break
                (length,) = _U64.unpack_from(data, at + 2)
                start += 8
            if not masked or head & _RSV or (limit is not None and length > limit):
                self._give_up(data[at:])  # `websockets` fails the connection its way
                return
            end = start + length
            if end > size:
                self._wanted = end - at
                break
            opcode = head & _OPCODE
            if (
                head & _FIN
                and opcode in (_BINARY, _TEXT)
                and self.conn.current_size is None  # not inside a fragmented message
                and not self.close_sent
            ):
                payload = apply_mask(data[start:end], data[start - 4 : start])
                if opcode == _BINARY:
                    self._deliver({"type": "websocket.receive", "bytes": payload})
                    at = end
                    continue
                self.curr_msg_data_type, self.frames = "text", [payload]
                self.send_receive_event_to_app()  # decodes; bad UTF-8 fails the socket
            else:
                super().data_received(data[at:end])  # one whole frame: a control frame, a part
            if self.close_sent or self.conn.state is not OPEN or self.conn.parser_exc is not None:
                self._give_up(data[end:])
                return
            at = end
        if at < size:
            self._partial += data[at:]

    async def receive(self) -> ASGIReceiveEvent:
        inbox: _Inbox = self.queue  # type: ignore[assignment]
        message = inbox.messages.popleft() if inbox.messages else await inbox.get()
        if self.read_paused and not inbox.messages:
            self.read_paused = False
            self.transport.resume_reading()
        return message  # type: ignore[no-any-return]

    def _deliver(self, message: Any) -> None:
        self.queue.put_nowait(message)
        if not self.read_paused:  # as uvicorn: no more frames until the app takes this one
            self.read_paused = True
            self.transport.pause_reading()

    def _may_go_short(self) -> bool:
        """Whether whole data frames may skip `websockets` from now on: once the handshake is
        complete, with no extension negotiated (compressed frames need it) and its parser
        waiting for the first byte of a frame (not inside one the client sent early)."""
        if self._given_up or not self.handshake_complete or self.initial_response is not None:
            return False
        conn = self.conn
        if not hasattr(conn, "current_size") or not hasattr(conn, "max_message_size"):
            self._given_up = True  # a `websockets` older than the one this was written for
            return False
        if conn.state is not OPEN or conn.extensions or conn.reader.buffer:
            return False
        waiting: Any = conn.parser
        while getattr(waiting, "gi_yieldfrom", None) is not None:
            waiting = waiting.gi_yieldfrom
        if getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__:
            self._given_up = True
            return False
        self._short = True
        return True

    def _give_up(self, rest: bytes) -> None:
        self._short, self._given_up = False, True
        if rest and self.conn.parser_exc is None:
            super().data_received(rest)

    async def send(self, message: ASGISendEvent) -> None:
        if (
            self._short
            and message["type"] == "websocket.send"
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is OPEN
        ):
            payload = message.get("bytes")
            if payload is not None:
                self.transport.write(_frame_head(_BINARY, len(payload)) + payload)
                return
            text = message.get("text")
            if text is not None:
                encoded = text.encode()
                self.transport.write(_frame_head(_TEXT, len(encoded)) + encoded)
                return
        await super().send(message)

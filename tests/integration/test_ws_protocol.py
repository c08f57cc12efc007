"""The WebSocket protocol `lstm-serve` runs (`LeanWebSocketProtocol`) on a real uvicorn, under
an ASGI echo: whole data frames take its short path, everything else `websockets`' parser;
either way a client sees RFC 6455 behaviour. Clients: the `websockets` library, and raw
sockets for what that library would never send."""

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from service.api.ws_protocol import LeanWebSocketProtocol
from service.store.embedded import free_port

MAX_SIZE = 1 << 20


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Each message back as it came; a message "close" closes with code 4321."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await receive()
    if scope["path"] == "/slow":
        await asyncio.sleep(0.3)  # lets a client's early bytes arrive before the accept
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4321, "reason": "asked"})
            return
        bytes_, text = message.get("bytes"), message.get("text")
        await send({"type": "websocket.send", "bytes": bytes_, "text": text})


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        echo, host="127.0.0.1", port=port, ws=LeanWebSocketProtocol, ws_max_size=MAX_SIZE,
        log_level="warning", lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    yield f"ws://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_messages_of_every_length_encoding_come_back_whole_and_in_order(
    url: str, compression: str | None
) -> None:
    # 125, 126 and 65536 bytes: the last of the 7-bit lengths, the first of the 16-bit and
    # of the 64-bit ones; with compression negotiated, everything goes through `websockets`.
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 300_000]
    payloads = [os.urandom(size) for size in sizes]
    with connect(url, compression=compression, max_size=MAX_SIZE) as ws:
        for payload in payloads:
            ws.send(payload)
        texts = ["", "é" * 70, "chunk ✓" * 5000]
        for text in texts:
            ws.send(text)
        assert [ws.recv() for _ in payloads] == payloads
        assert [ws.recv() for _ in texts] == texts


def test_fragments_pings_and_a_closing_handshake_keep_their_meaning(url: str) -> None:
    with connect(url, compression=None) as ws:
        ws.send([b"ab", b"cd", b"ef"])  # one message in three frames: reassembled
        ws.ping(b"are you there").wait(5)
        ws.send(b"after")
        assert ws.recv() == b"abcdef" and ws.recv() == b"after"
        ws.send("close")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4321


def _raw_socket(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1].strip("/"))
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def _client_frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    size = len(payload)
    second = (0x80 if mask else 0) | (size if size < 126 else 126 if size < 65536 else 127)
    head = struct.pack("!BB", 0x80 | opcode, second)
    if size >= 65536:
        head += struct.pack("!Q", size)
    elif size >= 126:
        head += struct.pack("!H", size)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload)) if mask else payload
    return head + mask + masked


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            part = sock.recv(n - len(data))
            if not part:
                raise EOFError
            data += part
        return data

    first, second = exactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", exactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", exactly(8))
    return first & 0x0F, exactly(size)


def _close_code(sock: socket.socket) -> int:
    opcode, payload = _read_frame(sock)
    assert opcode == 0x8
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


def test_frames_cut_anywhere_across_reads_or_sent_together_arrive_in_order(url: str) -> None:
    payloads = [bytes([n]) * size for n, size in enumerate((3, 130, 70_000, 0, 64))]
    stream = b"".join(_client_frame(0x2, payload) for payload in payloads)
    sock = _raw_socket(url)
    with sock:
        for cut in range(0, len(stream), 997):  # odd-sized pieces: headers and masks split
            sock.sendall(stream[cut : cut + 997])
            time.sleep(0.001)
        sock.sendall(stream[:5])  # one byte at a time: the first frame again
        for byte in stream[5 : len(_client_frame(0x2, payloads[0]))]:
            sock.sendall(bytes([byte]))
        got = [_read_frame(sock) for _ in range(len(payloads) + 1)]
    assert got == [(0x2, payload) for payload in [*payloads, payloads[0]]]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_client_frame(0x2, b"unmasked", mask=b""), 1002),  # clients must mask (RFC 6455 5.1)
        (b"\xc2\x81\x00\x00\x00\x00x", 1002),  # RSV1 set, no extension agreed
        (_client_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (_client_frame(0x3, b"x"), 1002),  # a reserved opcode
        (struct.pack("!BBQ", 0x82, 0xFF, MAX_SIZE + 1) + b"\0\0\0\0", 1009),  # too big
    ],
)
def test_a_frame_websockets_would_refuse_closes_the_socket_with_its_code(
    url: str, frame: bytes, code: int
) -> None:
    sock = _raw_socket(url)
    with sock:
        sock.sendall(_client_frame(0x2, b"fine"))
        assert _read_frame(sock) == (0x2, b"fine")
        sock.sendall(frame + _client_frame(0x2, b"never"))
        assert _close_code(sock) == code


@pytest.mark.parametrize("early", [2, 3])
def test_a_frame_begun_before_the_socket_is_accepted_is_still_answered(
    url: str, early: int
) -> None:
    # Its first bytes reach `websockets` before the handshake completes: its parser is then
    # inside a frame (2 bytes: with nothing buffered), where the short path must not start.
    port = int(url.rsplit(":", 1)[1].strip("/"))
    # A mask whose bytes also read as a frame header: cut there, the rest would parse.
    frame = _client_frame(0x2, b"early", mask=b"\x82\x85\x00\x00")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        time.sleep(0.1)
        sock.sendall(frame[:early])
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(frame[early:] + _client_frame(0x2, b"later"))
        assert _read_frame(sock) == (0x2, b"early")
        assert _read_frame(sock) == (0x2, b"later")


def test_many_sockets_at_once_each_get_their_own_answers(url: str) -> None:
    async def one(index: int) -> list[bytes]:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await reader.readuntil(b"\r\n\r\n")
        answers = []
        for n in range(50):
            writer.write(_client_frame(0x2, struct.pack("<II", index, n)))
            _, second = await reader.readexactly(2)
            answers.append(await reader.readexactly(second & 0x7F))
        writer.close()
        return answers

    async def all_of_them() -> list[list[bytes]]:
        return await asyncio.gather(*(one(i) for i in range(32)))

    got = asyncio.run(all_of_them())
    assert got == [[struct.pack("<II", i, n) for n in range(50)] for i in range(32)]

"""The load generator: closed-loop clients on raw keep-alive HTTP/1.1 connections.

Run in its own process (`python -m bench.load SPEC_JSON`) so its CPU is not the
server's. It imports neither numpy nor any HTTP library: one request costs a
`write` and two reads, so the client stays far cheaper than any server it measures.
The answer is one JSON object on stdout.
"""

import array
import asyncio
import base64
import contextlib
import json
import os
import random
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection to a server that answers with Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> "Connection":
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=2**24
        )
        return self

    async def request(
        self, method: str, path: str, body: bytes = b"", binary: bool = False
    ) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        media = "application/octet-stream" if binary else "application/json"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: {media}\r\nAccept: {media}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "transfer-encoding":
                raise HttpError(f"unsupported transfer-encoding: {value.strip()}")
        if length is None:
            raise HttpError("response without Content-Length")
        return status, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


class WebSocketConnection:
    """One WebSocket on a raw socket: the upgrade, then one binary frame out and one frame
    back per chunk. The frames go out with an all-zero mask: RFC 6455 asks clients for an
    unpredictable one against cache-poisoning proxies, irrelevant on loopback, and a zero
    mask leaves the payload as it is, so the client costs next to nothing per chunk."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self, path: str) -> "WebSocketConnection":
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=2**24
        )
        key = base64.b64encode(os.urandom(16)).decode()
        self._writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise HttpError(f"WebSocket upgrade refused: {head[:200]!r}")
        return self

    async def exchange(self, payload: bytes) -> tuple[int, bytes]:
        """Send one binary frame; the opcode and payload of the frame that answers it."""
        assert self._reader is not None and self._writer is not None
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x82, 0x80 | size)
        elif size < 65536:
            head = struct.pack("!BBH", 0x82, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x82, 0x80 | 127, size)
        self._writer.write(head + b"\0\0\0\0" + payload)
        first, second = await self._reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._reader.readexactly(8))
        return first & 0x0F, await self._reader.readexactly(length)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


def chunk_bodies(
    steps: int, features: int, count: int, seed: int, binary: bool = False
) -> list[bytes]:
    """`count` request bodies of `steps` random timesteps, encoded once up front: JSON, or
    little-endian float32 (`binary`)."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        rows = [[rng.gauss(0.0, 1.0) for _ in range(features)] for _ in range(steps)]
        if binary:
            values = array.array("f", [value for row in rows for value in row])
            if sys.byteorder == "big":
                values.byteswap()
            bodies.append(values.tobytes())
        else:
            bodies.append(json.dumps({"inputs": rows}).encode())
    return bodies


def v2_bodies(session_id: str, steps: int, features: int, count: int, seed: int) -> list[bytes]:
    """The same chunks as Open Inference Protocol requests, the session named by an input."""
    return [
        json.dumps(
            {
                "inputs": [
                    {"name": "session", "shape": [1, 1], "datatype": "BYTES", "data": [session_id]},
                    {
                        "name": "inputs",
                        "shape": [1, steps, features],
                        "datatype": "FP32",
                        "data": [value for row in rows for value in row],
                    },
                ]
            }
        ).encode()
        for rows in _chunks(steps, features, count, seed)
    ]


def many_bodies(
    session_ids: list[str], steps: int, features: int, count: int, seed: int
) -> list[bytes]:
    """`POST /v1/chunks` bodies: one chunk for every session in each."""
    per_session = [
        _chunks(steps, features, count, seed * 7919 + i) for i in range(len(session_ids))
    ]
    return [
        json.dumps(
            {
                "chunks": [
                    {"session_id": sid, "inputs": chunks[n]}
                    for sid, chunks in zip(session_ids, per_session, strict=True)
                ]
            }
        ).encode()
        for n in range(count)
    ]


def _chunks(steps: int, features: int, count: int, seed: int) -> list[list[list[float]]]:
    rng = random.Random(seed)
    return [
        [[rng.gauss(0.0, 1.0) for _ in range(features)] for _ in range(steps)] for _ in range(count)
    ]


@dataclass
class Spec:
    """What one load run does: every client owns one session and sends chunks in a loop.

    Warm-up lasts `warmup_seconds` and until every client has had one answer. The window
    then lasts `seconds`, longer if needed to hold `min_requests` answers (a slow system
    at high concurrency), but never more than `max_seconds`; `max_requests` ends it early.
    `protocol` "v2" drives the PyTriton peer over the Open Inference Protocol's JSON.
    With `sessions_per_request`, each client owns that many sessions and sends one chunk
    for each of them per request (`POST /v1/chunks`).
    """

    host: str
    port: int
    model: str
    features: int
    concurrency: int
    steps: int
    warmup_seconds: float
    seconds: float
    min_requests: int = 0
    max_seconds: float = 60.0
    max_requests: int = 0
    stateless: bool = False
    binary: bool = False
    websocket: bool = False  # chunks as binary frames on `GET /v1/sessions/{id}/stream`
    seed: int = 0
    session_prefix: str = "bench"
    protocol: str = "v1"
    sessions_per_request: int = 0
    # Processes (the server's, Redis) whose CPU over the window is reported per request,
    # without the run's set-up (sessions, handshakes) that a whole-run figure includes.
    watch_pids: list[int] = field(default_factory=list)
    # The client's event loop: uvloop (the server's too) costs the client less per request
    # than asyncio's, so that it takes less of the CPU it shares with the server.
    uvloop: bool = True


@dataclass
class Tally:
    done_ns: list[int] = field(default_factory=list)
    latencies_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    session_ids: list[str] = field(default_factory=list)
    completed: int = 0


async def _new_session(conn: Connection, spec: Spec, index: int) -> str:
    session_id = f"{spec.session_prefix}-{spec.seed}-{index}"
    body = json.dumps({"session_id": session_id}).encode()
    status, answer = await conn.request("POST", f"/v1/models/{spec.model}/sessions", body)
    if status != 201:
        raise HttpError(f"creating a session: {status} {answer[:200]!r}")
    return session_id


class Window:
    """When measuring starts and stops, shared by every client."""

    def __init__(self, spec: Spec, tally: Tally) -> None:
        self.spec = spec
        self.tally = tally
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.waiting = spec.concurrency
        self.warm: set[int] = set()
        self.started_ns = 0
        self.opens_ns: int | None = None
        self.closed_ns = 0
        # This process's CPU over the window (`time.process_time`): the load generator
        # shares the machine with the server, so its cost per request is reported too.
        self.opens_cpu: float | None = None
        self.closed_cpu = 0.0
        self.opens_watched: list[float] = []
        self.closed_watched: list[float] = []

    def client_ready(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.started_ns = time.perf_counter_ns()
            self.ready.set()

    def answered(self, client: int, began_ns: int, ended_ns: int) -> None:
        spec = self.spec
        self.tally.completed += 1
        if self.opens_ns is None:
            self.warm.add(client)
            if len(self.warm) == spec.concurrency:
                self.opens_ns = max(ended_ns, self.started_ns + int(spec.warmup_seconds * 1e9))
            elif ended_ns - self.started_ns > (spec.warmup_seconds + spec.max_seconds) * 1e9:
                self._close(ended_ns)  # some client never got an answer: give up
            return
        if ended_ns < self.opens_ns:
            return
        if self.opens_cpu is None:
            self.opens_cpu = time.process_time()
            self.opens_watched = [_cpu_seconds(pid) for pid in spec.watch_pids]
        self.tally.done_ns.append(ended_ns)
        self.tally.latencies_ns.append(ended_ns - began_ns)
        elapsed = ended_ns - self.opens_ns
        counted = len(self.tally.done_ns)
        if (
            (elapsed >= spec.seconds * 1e9 and counted >= spec.min_requests)
            or elapsed >= spec.max_seconds * 1e9
            or (spec.max_requests and counted >= spec.max_requests)
        ):
            self._close(ended_ns)

    def _close(self, ended_ns: int) -> None:
        if not self.stop.is_set():
            self.closed_ns = ended_ns
            self.closed_cpu = time.process_time()
            if self.opens_watched:
                self.closed_watched = [_cpu_seconds(pid) for pid in self.spec.watch_pids]
            self.stop.set()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _websocket_client(spec: Spec, index: int, window: Window, tally: Tally) -> None:
    conn = await Connection(spec.host, spec.port).open()
    try:
        session_id = await _new_session(conn, spec, index)
    finally:
        await conn.close()
    tally.session_ids.append(session_id)
    socket = await WebSocketConnection(spec.host, spec.port).open(
        f"/v1/sessions/{session_id}/stream"
    )
    try:
        chunks = chunk_bodies(spec.steps, spec.features, 16, spec.seed * 1000 + index, True)
        window.client_ready()
        await window.ready.wait()
        sent = 0
        while not window.stop.is_set():
            began = time.perf_counter_ns()
            opcode, answer = await socket.exchange(chunks[sent % len(chunks)])
            ended = time.perf_counter_ns()
            sent += 1
            if opcode != 0x2:
                tally.errors.append(f"opcode {opcode} {answer[:200]!r}")
                if len(tally.errors) > 20 or opcode == 0x8:
                    window._close(ended)
                continue
            window.answered(index, began, ended)
    finally:
        await socket.close()


def _v2_session(spec: Spec, index: int) -> str:
    return f"{spec.session_prefix}-{spec.seed}-{index}"


def _bodies(spec: Spec, index: int, seed: int) -> list[bytes]:
    if spec.protocol == "v2":
        return v2_bodies(_v2_session(spec, index), spec.steps, spec.features, 16, seed)
    return chunk_bodies(spec.steps, spec.features, 16, seed, spec.binary)


async def _client(spec: Spec, index: int, window: Window, tally: Tally) -> None:
    if spec.websocket:
        await _websocket_client(spec, index, window, tally)
        return
    seed = spec.seed * 1000 + index
    # Built before connecting: 16 bodies of 10,000 steps take seconds on a busy machine,
    # longer than the server waits for a connection's first request (its header timeout).
    bodies = [] if spec.sessions_per_request else _bodies(spec, index, seed)
    conn = await Connection(spec.host, spec.port).open()
    try:
        if spec.protocol == "v2":  # the peer keeps sessions itself: the first chunk starts one
            tally.session_ids.append(_v2_session(spec, index))
            path = f"/v2/models/{spec.model}/infer"
        elif spec.sessions_per_request:
            ids = [
                await _new_session(conn, spec, index * spec.sessions_per_request + j)
                for j in range(spec.sessions_per_request)
            ]
            tally.session_ids.extend(ids[:1])
            path = "/v1/chunks"
            bodies = many_bodies(ids, spec.steps, spec.features, 16, seed)
        elif spec.stateless:
            path = f"/v1/models/{spec.model}/predict"
        else:
            session_id = await _new_session(conn, spec, index)
            tally.session_ids.append(session_id)
            path = f"/v1/sessions/{session_id}/predict"
        window.client_ready()
        await window.ready.wait()
        sent = 0
        while not window.stop.is_set():
            began = time.perf_counter_ns()
            body = bodies[sent % len(bodies)]
            status, answer = await conn.request("POST", path, body, spec.binary)
            ended = time.perf_counter_ns()
            sent += 1
            if status != 200 or (spec.sessions_per_request and b'"error"' in answer):
                tally.errors.append(f"{status} {answer[:200]!r}")
                if len(tally.errors) > 20:
                    window._close(ended)
                continue
            window.answered(index, began, ended)
    finally:
        await conn.close()


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[rank] / 1e6


async def run(spec: Spec) -> dict[str, Any]:
    """Answers that arrive inside the window count; requests still in flight when it
    closes are drained (so the next run starts on an idle server) but not counted."""
    tally = Tally()
    window = Window(spec, tally)
    await asyncio.gather(*(_client(spec, i, window, tally) for i in range(spec.concurrency)))
    return summary(spec, window, tally)


def summary(spec: Spec, window: Window, tally: Tally) -> dict[str, Any]:
    """The answer of a load run (this one's or `bench.grpc_load`'s)."""
    opens = window.opens_ns if window.opens_ns is not None else window.closed_ns
    seconds = max(1e-9, (window.closed_ns - opens) / 1e9)
    latencies = sorted(tally.latencies_ns)
    return {
        "concurrency": spec.concurrency,
        "steps": spec.steps,
        "stateless": spec.stateless,
        "binary": spec.binary,
        "websocket": spec.websocket,
        "requests": len(latencies),
        "seconds": seconds,
        "throughput": len(latencies) / seconds,
        "sessions_per_request": spec.sessions_per_request,
        "chunks_per_second": len(latencies) * max(1, spec.sessions_per_request) / seconds,
        "steps_per_second": len(latencies)
        * spec.steps
        * max(1, spec.sessions_per_request)
        / seconds,
        "p50_ms": _percentile(latencies, 0.50),
        "p90_ms": _percentile(latencies, 0.90),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": latencies[-1] / 1e6 if latencies else float("nan"),
        "completed_total": tally.completed,
        "client_cpu_ms_per_request": 1000
        * max(0.0, window.closed_cpu - (window.opens_cpu or window.closed_cpu))
        / max(1, len(latencies)),
        "watched_cpu_ms_per_request": [
            1000 * (closed - opened) / max(1, len(latencies))
            for opened, closed in zip(window.opens_watched, window.closed_watched, strict=False)
        ],
        "errors": len(tally.errors),
        "first_errors": tally.errors[:3],
        "session_ids": tally.session_ids[:4],
    }


def main() -> None:
    spec = Spec(**json.loads(sys.argv[1]))
    if spec.uvloop:
        import uvloop

        print(json.dumps(uvloop.run(run(spec))))
    else:
        print(json.dumps(asyncio.run(run(spec))))


if __name__ == "__main__":
    main()

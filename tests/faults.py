"""A TCP proxy on loopback that drops connections at random, for clients under faults."""

import asyncio
import random
import threading
from dataclasses import dataclass

READ_BYTES = 65536


@dataclass
class FaultCounts:
    connections: int = 0
    failovers: int = 0  # connections sent to a later upstream because an earlier one was down
    dropped_before: int = 0  # the request never reached the server
    dropped_after: int = 0  # the server answered (and applied the chunk); the answer is lost


class FaultyProxy:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` (a list: the first that
    accepts, like a load balancer that skips dead replicas). Each time the client sends
    bytes, the connection is cut with probability `drop_before` instead of forwarding them;
    each time the server answers, it is cut with probability `drop_after` instead of
    passing the answer on. Bounded: at most `max_connections`, and it stops by itself
    after `lifetime` seconds."""

    def __init__(
        self,
        upstream_port: int | list[int],
        drop_before: float = 0.1,
        drop_after: float = 0.1,
        seed: int = 0,
        lifetime: float = 300.0,
        max_connections: int = 5000,
    ) -> None:
        self.upstream_ports = upstream_port if isinstance(upstream_port, list) else [upstream_port]
        self.drop_before = drop_before
        self.drop_after = drop_after
        self.lifetime = lifetime
        self.max_connections = max_connections
        self.counts = FaultCounts()
        self._random = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FaultyProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> "FaultyProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._loop.call_later(self.lifetime, self._loop.stop)
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self.counts.connections += 1
        if self.counts.connections > self.max_connections:
            client_out.transport.abort()
            return
        for rank, port in enumerate(self.upstream_ports):
            try:
                server_in, server_out = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue
            self.counts.failovers += rank > 0
            break
        else:
            client_out.transport.abort()
            return
        writers = (client_out, server_out)
        self._writers.update(writers)
        try:
            await asyncio.gather(
                self._pump(client_in, server_out, writers, before=True),
                self._pump(server_in, client_out, writers, before=False),
            )
        finally:
            for writer in writers:
                writer.transport.abort()
                self._writers.discard(writer)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        writers: tuple[asyncio.StreamWriter, ...],
        before: bool,
    ) -> None:
        chance = self.drop_before if before else self.drop_after
        try:
            while data := await source.read(READ_BYTES):
                if self._random.random() < chance:
                    if before:
                        self.counts.dropped_before += 1
                    else:
                        self.counts.dropped_after += 1
                    break
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        for writer in writers:
            writer.transport.abort()

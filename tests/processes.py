"""Real service processes (`lstm-serve`) for tests that need more than one process."""

import os
import sys
from pathlib import Path

import httpx

from service.child_process import ChildProcess
from service.store.embedded import free_port


class ServiceProcess:
    """One `lstm-serve` process on a free loopback port, started and stopped by the test."""

    def __init__(
        self,
        redis_url: str | None,
        model_dir: Path,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        grpc: bool = False,
        http: str = "auto",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.workers = workers
        self.http = http
        self.env = {**os.environ, "LSTM_MODEL_DIR": str(model_dir), **(env or {})}
        self.env.pop("LSTM_REDIS_URL", None)
        if redis_url is not None:  # None: lstm-serve starts its embedded Redis
            self.env["LSTM_REDIS_URL"] = redis_url
        self.log_path = log_path
        self.process = ChildProcess(
            f"lstm-serve on port {self.port}",
            [
                sys.executable, "-m", "service.cli",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), "--log-level", "warning",
                "--grpc-port", str(self.grpc_port), "--http", http,
            ],
            env=self.env,
            log_path=log_path,
        )  # fmt: skip

    def start(self, timeout: float = 90.0) -> "ServiceProcess":
        self.process.start(self.ready, timeout)
        return self

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn workers included)."""
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

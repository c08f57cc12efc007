"""Real service processes (`lstm-serve`) for tests that need more than one process."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port() if grpc else 0
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.workers = workers
        self.env = {**os.environ, "LSTM_MODEL_DIR": str(model_dir), **(env or {})}
        self.env.pop("LSTM_REDIS_URL", None)
        if redis_url is not None:  # None: lstm-serve starts its embedded Redis
            self.env["LSTM_REDIS_URL"] = redis_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> "ServiceProcess":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "service.cli",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), "--log-level", "warning",
                "--grpc-port", str(self.grpc_port),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )  # fmt: skip
        if self.log_path:
            log.close()  # type: ignore[union-attr]  # the child holds its own copy
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"lstm-serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"lstm-serve on port {self.port} not ready after {timeout}s")

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn workers included)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "ServiceProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

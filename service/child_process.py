"""A child process in its own process group: started, waited for until ready, stopped."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path


class ChildProcess:
    """Runs `argv` in a new session, so its pid is its process group's id and `stop` and
    `kill` reach every process it starts (uvicorn's workers, nginx's, a forked redis-server);
    stdout and stderr go to `log_path` (appended) or nowhere."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_path: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.preexec_fn = preexec_fn
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, ready: Callable[[], bool], timeout: float, poll: float = 0.2) -> "ChildProcess":
        """Start, then call `ready` every `poll` seconds until it is true; a child that exits
        first or is not ready within `timeout` is stopped and reported with its log's tail."""
        with contextlib.ExitStack() as files:
            output = (
                files.enter_context(open(self.log_path, "ab"))
                if self.log_path
                else subprocess.DEVNULL
            )  # the child holds its own copy of the file
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=output,
                stderr=output,
                start_new_session=True,
                preexec_fn=self.preexec_fn,
            )
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}{self._log()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout}s{self._log()}")
            time.sleep(poll)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group; SIGKILL it if the child has not exited in `timeout`."""
        if self.process and self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """SIGKILL the process group, for failure tests: nothing is flushed or handed over."""
        if self.process and self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, signum: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited since the poll
            os.killpg(self.pid, signum)

    def _log(self, lines: int = 20) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"; {self.log_path} ends:\n" + "\n".join(tail)

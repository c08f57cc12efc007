"""The systems under test as real server processes: the service (`lstm-serve`), the floor
and the naive baseline (both under uvicorn), all with the same worker count."""

import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from service.child_process import ChildProcess
from service.store.embedded import free_port

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class System:
    """How to start one system: its argv (without host, port, workers) and extra env.
    `protocol` is what the load generator speaks to it: "v1" (the native routes) or "v2"
    (the Open Inference Protocol's JSON, a `session` input naming the session). With
    `whole_tree`, every process the system starts counts as serving (CPU and memory)."""

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    label: str = ""
    ready_path: str = "/readyz"
    protocol: str = "v1"
    whole_tree: bool = False


def service(micro_batch: bool) -> System:
    return System(
        name="service" if micro_batch else "service-no-batch",
        argv=(sys.executable, "-m", "service.cli"),
        env={"LSTM_MICRO_BATCH": "true" if micro_batch else "false"},
        label="lstm-stream" + ("" if micro_batch else " (micro-batching off)"),
    )


def baseline(name: str) -> System:
    return System(
        name=name,
        argv=(sys.executable, "-m", "uvicorn", f"bench.{name}_app:create_app", "--factory"),
        label={"floor": "floor (HTTP + Redis CAS, no model)", "naive": "naive (Keras stateful)"}[
            name
        ],
    )


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found.extend(int(child) for child in task.read_text().split())
    return found


def _descendants(pid: int) -> list[int]:
    found, queue = [pid], [pid]
    while queue:
        children = _children(queue.pop())
        found.extend(children)
        queue.extend(children)
    return found


def _status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


class Server:
    """One system's server process group on a free loopback port."""

    def __init__(self, system: System, redis_url: str, workers: int, log_path: Path) -> None:
        self.system = system
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()  # the service's; the baselines have no gRPC
        self.log_path = log_path
        self.env = {
            **os.environ,
            "LSTM_REDIS_URL": redis_url,
            "LSTM_GRPC_PORT": str(self.grpc_port),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            **system.env,
        }
        self.process: ChildProcess | None = None
        self.startup_seconds = 0.0

    def start(self, timeout: float = 180.0) -> "Server":
        argv = [
            *self.system.argv,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--log-level", "warning",
        ]  # fmt: skip
        self.process = ChildProcess(self.system.name, argv, self.env, REPO, self.log_path)
        began = time.monotonic()
        self.process.start(self._ready, timeout)
        self.startup_seconds = time.monotonic() - began
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.system.ready_path, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers, or the one process; for a
        system of several processes (PyTriton: Python, tritonserver, backend stubs) all."""
        assert self.process is not None
        if self.system.whole_tree:
            return _descendants(self.process.pid)
        workers = [
            pid
            for pid in _children(self.process.pid)
            if "resource_tracker" not in _cmdline(pid) and "redis-server" not in _cmdline(pid)
        ]
        return workers or [self.process.pid]

    def memory_mb(self) -> list[dict[str, float]]:
        """Resident memory now and at its peak, per worker (summed over a whole tree)."""
        if self.system.whole_tree:
            pids = self.worker_pids()
            return [
                {
                    "pid": pids[0],
                    "rss_mb": sum(_status_kb(pid, "VmRSS") for pid in pids) / 1024,
                    "peak_rss_mb": sum(_status_kb(pid, "VmHWM") for pid in pids) / 1024,
                }
            ]
        return [
            {
                "pid": pid,
                "rss_mb": _status_kb(pid, "VmRSS") / 1024,
                "peak_rss_mb": _status_kb(pid, "VmHWM") / 1024,
            }
            for pid in self.worker_pids()
        ]

    def cpu_seconds(self) -> float:
        """User and system CPU time the workers have used so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        self.process = None

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

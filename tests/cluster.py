"""A real Redis Cluster on loopback ports (redis-server processes, no replicas), for tests."""

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from service.store.embedded import EmbeddedRedis

# A cluster node also listens on its port + 10000 (the cluster bus), so ports come from a
# range where both fit, rather than from the kernel's ephemeral range.
_PORT_RANGE = (20_000, 40_000)
_BUS_OFFSET = 10_000
NODE_ARGS = (
    "--cluster-enabled", "yes",
    "--cluster-config-file", "nodes.conf",
    "--cluster-node-timeout", "2000",
)  # fmt: skip


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    for _ in range(200):
        port = random.randint(*_PORT_RANGE)
        if _bindable(port) and _bindable(port + _BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalCluster:
    """`masters` redis-server processes joined into one cluster by `redis-cli --cluster create`."""

    def __init__(self, data_dir: Path, masters: int = 3) -> None:
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node-{index}", port=free_cluster_port(), extra_args=NODE_ARGS
            )
            for index in range(masters)
        ]

    @property
    def url(self) -> str:
        """A seed node, in the form the service reads as a cluster."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def seed_url(self) -> str:
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> "LocalCluster":
        try:
            for node in self.nodes:
                node.start()
            redis_cli = shutil.which("redis-cli")
            if redis_cli is None:
                raise RuntimeError("redis-cli is needed to create a cluster")
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            subprocess.run(
                [redis_cli, "--cluster", "create", *addresses,
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout,
            )  # fmt: skip
            self.wait_until_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every node reports `cluster_state:ok` (slots covered, nodes agree)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                while client.cluster("INFO")["cluster_state"] != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {node.port} never reached state ok")
                    time.sleep(0.1)

    def node_holding(self, key: str) -> EmbeddedRedis:
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                if client.cluster("COUNTKEYSINSLOT", client.cluster("KEYSLOT", key)):
                    return node
        raise LookupError(f"no node holds {key}")

    def keys_per_master(self, pattern: str) -> dict[int, int]:
        """How many keys matching `pattern` each master holds, by port."""
        counts = {}
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                counts[node.port] = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
        return counts

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

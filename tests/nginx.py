"""docker/nginx.conf, read and run outside Docker: parse its upstreams, render it for loopback."""

import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from service.child_process import ChildProcess
from service.store.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "docker" / "nginx.conf"
UPSTREAM = "lstm_api"
GRPC_UPSTREAM = "lstm_grpc"
SERVER_LINE = re.compile(r"^([ \t]*)server\s+([^\s;]+)([^;]*);[^\n]*\n", re.MULTILINE)
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def directive_values(text: str, name: str) -> list[str]:
    """Arguments of every `name ...;` directive (comments ignored, quotes kept)."""
    pattern = re.compile(rf"(?:^|[{{;\s]){re.escape(name)}\s+([^;]*);", re.MULTILINE)
    return [m.group(1).strip() for m in pattern.finditer(strip_comments(text))]


def upstream_block(text: str, name: str = UPSTREAM) -> re.Match[str]:
    match = re.search(rf"upstream\s+{name}\s*\{{(.*?)\n\s*\}}", text, re.DOTALL)
    if not match:
        raise AssertionError(f"no `upstream {name} {{...}}` block in {NGINX_CONF}")
    return match


def upstream_servers(text: str, name: str = UPSTREAM) -> list[tuple[str, int]]:
    """(host, port) of each `server` in the upstream block."""
    servers = []
    for match in SERVER_LINE.finditer(strip_comments(upstream_block(text, name).group(1))):
        host, _, port = match.group(2).rpartition(":")
        servers.append((host, int(port)))
    return servers


def size_in_bytes(value: str) -> int:
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    number, unit = re.fullmatch(r"(\d+)([kmgKMG]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * units.get(unit.lower(), 1)


def replace_once(text: str, old: str, new: str) -> str:
    """The shipped config and this renderer must agree: each edit matches exactly once."""
    count = text.count(old)
    if count != 1:
        raise AssertionError(f"expected `{old}` once in {NGINX_CONF}, found it {count} times")
    return text.replace(old, new)


def with_servers(text: str, name: str, addresses: list[str]) -> str:
    """`text` with upstream `name`'s server lines replaced by one per address."""
    block = upstream_block(text, name)
    lines = list(SERVER_LINE.finditer(block.group(1)))
    if not lines:
        raise AssertionError(f"no server lines in upstream {name}")
    indent, params = lines[0].group(1), lines[0].group(3)  # max_fails etc. as shipped
    servers = "".join(f"{indent}server {address}{params};\n" for address in addresses)
    body = block.group(1)
    body = body[: lines[0].start()] + servers + SERVER_LINE.sub("", body[lines[0].start() :])
    return text[: block.start(1)] + body + text[block.end(1) :]


def render(
    text: str,
    upstreams: list[str],
    port: int,
    workdir: Path,
    workers: int | None = None,
    grpc_upstreams: list[str] | None = None,
    grpc_port: int = 0,
) -> str:
    """The shipped config with only addresses, ports, file paths (and workers) changed.
    Without `grpc_upstreams` the gRPC upstream names the HTTP ones (never used)."""
    text = with_servers(text, UPSTREAM, upstreams)
    text = with_servers(text, GRPC_UPSTREAM, grpc_upstreams or upstreams)
    text = replace_once(text, "listen 8000;", f"listen 127.0.0.1:{port};")
    text = replace_once(
        text, "listen 8001 http2;", f"listen 127.0.0.1:{grpc_port or free_port()} http2;"
    )
    text = replace_once(text, "pid /tmp/nginx.pid;", f"pid {workdir}/nginx.pid;")
    text = replace_once(text, "error_log /dev/stderr", f"error_log {workdir}/error.log")
    text = replace_once(text, "access_log /dev/stdout", f"access_log {workdir}/access.log")
    if workers is not None:
        text = replace_once(text, "worker_processes auto;", f"worker_processes {workers};")
    # Debian's compiled-in temp dirs are not ours to write; the nginx image has its own.
    temp_paths = "".join(f"    {d}_temp_path {workdir}/{d}_temp;\n" for d in TEMP_DIRS)
    text = replace_once(text, "http {\n", "http {\n" + temp_paths)
    if os.geteuid() == 0:
        # As root, workers would run as nobody, who cannot enter pytest's tmp_path.
        text = "user root;\n" + text
    return text


class NginxProcess:
    """Debian's nginx in the foreground, running docker/nginx.conf rendered for loopback."""

    def __init__(
        self,
        workdir: Path,
        upstreams: list[str],
        workers: int | None = None,
        grpc_upstreams: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.conf = workdir / "nginx.conf"
        self.access_log = workdir / "access.log"
        self.error_log = workdir / "error.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            render(
                NGINX_CONF.read_text(),
                upstreams,
                self.port,
                workdir,
                workers,
                grpc_upstreams,
                self.grpc_port,
            )
        )
        self.process = ChildProcess(
            f"nginx on port {self.port}",
            [*self.command(), "-g", "daemon off;"],
            log_path=self.error_log,  # what nginx says before it opens its own error log
        )

    def command(self) -> list[str]:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        return [binary, "-p", str(self.workdir), "-e", str(self.error_log), "-c", str(self.conf)]

    def start(self, timeout: float = 10.0) -> "NginxProcess":
        checked = subprocess.run([*self.command(), "-t"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t rejected the rendered config:\n{checked.stderr}")
        self.process.start(self.listening, timeout, poll=0.05)
        return self

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.process.stop(timeout=10)

    def access_entries(self) -> list[dict[str, Any]]:
        """The JSON access log (nginx writes each line when its request completes)."""
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines()]

    def entries_of(self, prefix: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The access log's entries whose request id starts with `prefix`, once `count` of
        them are there: nginx writes a request's line after sending its answer, so the
        last line may trail the answer a client already holds (and a stop can lose it)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = [e for e in self.access_entries() if e["request_id"].startswith(prefix)]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.02)

    def __enter__(self) -> "NginxProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

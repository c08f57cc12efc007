"""The benchmark: lstm-stream against the floor, the naive approach and PyTriton, in one run.

    python -m bench.run            full run (~6-10 min): tables, bench/results/<date>.{json,md},
                                   bench/results/throughput.png
    python -m bench.run --smoke    tiny sizes, no PyTriton, nothing written (CI smoke check)
    python -m bench.run --plot     redraw the PNG from the newest results JSON

Starts one Redis (`EmbeddedRedis`) and, one at a time, each system as a real server process
with the same worker count; the load generator runs in its own process (`bench.load`).
"""

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import redis

from bench import report
from bench.pytriton_env import pytriton_system
from bench.systems import REPO, Server, System, baseline, service
from service.store.embedded import EmbeddedRedis

RESULTS = REPO / "bench" / "results"
MODEL = "sensor-lstm"
FEATURES = 16
RAW_STATE_BYTES = 1024  # two LSTM(64) layers, h and c each, float32


@dataclass(frozen=True)
class Sizes:
    """How much each scenario measures. A window is at least `seconds` long and holds at
    least `min_requests` answers, so the naive baseline's few answers still count."""

    concurrency: tuple[int, ...] = (1, 8, 64)
    chunk_steps: tuple[int, ...] = (10, 100, 1000)
    chunk_concurrency: int = 1
    stateless_steps: int = 10_000
    stateless_requests: int = 5
    warmup_seconds: float = 2.0
    seconds: float = 8.0
    min_requests_per_session: int = 2
    chunk_warmup_seconds: float = 1.0
    chunk_seconds: float = 5.0
    chunk_min_requests: int = 3
    many_sessions: int = 64
    # Concurrent `/v1/chunks` requests (each a client with its own sessions). At 2 the server
    # idles ~10% of the time, waiting on the round trips to Redis; the target compares the
    # single route with the best of these (each row is reported).
    many_clients: tuple[int, ...] = (2, 4)
    max_seconds: float = 60.0


FULL = Sizes()
SMOKE = Sizes(
    concurrency=(1, 8),
    stateless_steps=1000,
    stateless_requests=2,
    warmup_seconds=0.3,
    seconds=0.7,
    min_requests_per_session=1,
    chunk_warmup_seconds=0.2,
    chunk_seconds=0.5,
    chunk_min_requests=1,
    many_sessions=8,
    many_clients=(1,),
    max_seconds=20.0,
)


def load(server: Server, generator: str = "bench.load", **spec: Any) -> dict[str, Any]:
    """One load run in its own process (`generator`: bench.load or bench.grpc_load)."""
    spec = {"host": "127.0.0.1", "port": server.port, "model": MODEL, "features": FEATURES, **spec}
    if generator == "bench.load":
        spec.setdefault("protocol", server.system.protocol)
    budget = 2 * spec.get("max_seconds", 60.0) + spec["warmup_seconds"] + 120
    cpu_before = server.cpu_seconds()
    done = subprocess.run(
        [sys.executable, "-m", generator, json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=budget,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    # CPU per request is steadier than throughput on a shared machine.
    cpu = server.cpu_seconds() - cpu_before
    result["server_cpu_ms_per_request"] = 1000 * cpu / max(1, result["completed_total"])
    if result["errors"]:
        raise RuntimeError(
            f"{server.system.name}: {result['errors']} errors: {result['first_errors']}"
        )
    return result


def redis_bytes(client: redis.Redis, pattern: str) -> dict[str, float]:
    """Mean `MEMORY USAGE` (and value length) of the session keys matching `pattern`."""
    keys = list(client.scan_iter(match=pattern, count=1000))
    if not keys:
        return {"sessions": 0, "memory_usage": float("nan"), "value_bytes": float("nan")}
    usage = [client.memory_usage(key, samples=0) for key in keys]
    lengths = [client.strlen(key) for key in keys]
    return {
        "sessions": len(keys),
        "memory_usage": sum(usage) / len(usage),
        "value_bytes": sum(lengths) / len(lengths),
    }


def measure(server: Server, client: redis.Redis, sizes: Sizes) -> dict[str, Any]:
    name = server.system.name
    out: dict[str, Any] = {"label": server.system.label, "startup_seconds": server.startup_seconds}

    def one_step(clients: int, prefix: str, generator: str = "bench.load", **spec: Any) -> Any:
        """A run of 1-step chunks from `clients` concurrent clients, the sweep's windows."""
        return load(
            server,
            generator,
            concurrency=clients,
            steps=1,
            warmup_seconds=sizes.warmup_seconds,
            seconds=sizes.seconds,
            min_requests=sizes.min_requests_per_session * clients,
            max_seconds=sizes.max_seconds,
            session_prefix=f"{name}-{prefix}{clients}",
            **spec,
        )

    out["sweep"] = []
    for concurrency in sizes.concurrency:
        result = one_step(concurrency, "c")
        report.progress(name, f"1-step chunks, {concurrency} sessions", result)
        out["sweep"].append(result)
    largest = max(sizes.concurrency)
    if server.system.protocol == "v1":  # the peer keeps its sessions in memory
        out["redis"] = redis_bytes(client, f"lstm:session:_:{name}-c{largest}-*")
    if name == "service":
        out["many_sweep"] = []
        for clients in sizes.many_clients:
            result = one_step(clients, "m", sessions_per_request=sizes.many_sessions)
            what = f"{clients} x {sizes.many_sessions} sessions per request"
            report.progress(name, what, result)
            out["many_sweep"].append(result)
        out["many"] = max(out["many_sweep"], key=lambda r: r["chunks_per_second"])
        out["grpc_stream"] = one_step(largest, "grpc", "bench.grpc_load", port=server.grpc_port)
        report.progress(name, f"1-step chunks, {largest} gRPC streams", out["grpc_stream"])
    if name != "service-no-batch":
        out["chunks"] = []
        for steps in sizes.chunk_steps:
            result = load(
                server,
                concurrency=sizes.chunk_concurrency,
                steps=steps,
                warmup_seconds=sizes.chunk_warmup_seconds,
                seconds=sizes.chunk_seconds,
                min_requests=sizes.chunk_min_requests,
                max_seconds=sizes.max_seconds,
                session_prefix=f"{name}-t{steps}",
            )
            report.progress(name, f"{steps}-step chunks", result)
            out["chunks"].append(result)
        if name == "service" and sizes.chunk_steps:
            # Long chunks as little-endian float32 bodies and answers (the naive baseline
            # only speaks JSON).
            steps = max(sizes.chunk_steps)
            out["binary_chunks"] = load(
                server,
                concurrency=sizes.chunk_concurrency,
                steps=steps,
                binary=True,
                warmup_seconds=sizes.chunk_warmup_seconds,
                seconds=sizes.chunk_seconds,
                min_requests=sizes.chunk_min_requests,
                max_seconds=sizes.max_seconds,
                session_prefix=f"{name}-b{steps}",
            )
            report.progress(name, f"{steps}-step binary chunks", out["binary_chunks"])
    if name not in ("service-no-batch", "pytriton") and sizes.stateless_requests:
        out["stateless"] = load(
            server,
            concurrency=1,
            steps=sizes.stateless_steps,
            stateless=True,
            warmup_seconds=0.0,
            seconds=0.0,
            min_requests=sizes.stateless_requests,
            max_requests=sizes.stateless_requests,
            max_seconds=sizes.max_seconds,
        )
        report.progress(name, f"stateless predict of {sizes.stateless_steps}", out["stateless"])
    out["workers"] = server.memory_mb()
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import numpy

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg()[0],
    }


def run(
    systems: list[System], sizes: Sizes, workers: int, log_dir: Path, notes: list[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "notes": notes,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": ("python -m bench.run " + shlex.join(sys.argv[1:])).strip(),
        "machine": machine(),
        "model": MODEL,
        "raw_state_bytes": RAW_STATE_BYTES,
        "workers": workers,
        "sizes": asdict(sizes),
        "systems": {},
    }
    began = time.monotonic()
    with EmbeddedRedis(log_dir / "redis") as embedded:
        client = redis.Redis.from_url(embedded.url)
        try:
            for system in systems:
                client.flushall()
                log_path = log_dir / f"{system.name}.log"
                with Server(system, embedded.url, workers, log_path) as server:
                    report.note(
                        f"{system.name}: up in {server.startup_seconds:.1f}s on {server.url}"
                    )
                    results["systems"][system.name] = measure(server, client, sizes)
        finally:
            client.close()
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    results["seconds"] = time.monotonic() - began
    results["ratios"] = report.ratios(results)
    return results


def newest_results() -> Path:
    found = sorted(RESULTS.glob("*.json"))
    if not found:
        raise SystemExit(f"no results in {RESULTS}: run `python -m bench.run` first")
    return found[-1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; writes nothing")
    parser.add_argument(
        "--plot",
        nargs="?",
        const="",
        metavar="RESULTS_JSON",
        help="only redraw the plot (from the newest results by default)",
    )
    parser.add_argument("--workers", type=int, default=1, help="workers for every system")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["service", "service-no-batch", "floor", "naive", "pytriton"],
        help="run only these systems",
    )
    parser.add_argument("--seconds", type=float, help="measured seconds per concurrency level")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", help="concurrent sessions to measure (1 8 64)"
    )
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="only 1-step chunks (and /v1/chunks): no longer chunks, no stateless predict",
    )
    parser.add_argument(
        "--out", type=Path, help="results folder (default bench/results; with --smoke: none)"
    )
    args = parser.parse_args(argv)

    if args.plot is not None:
        source = Path(args.plot) if args.plot else newest_results()
        target = report.plot(json.loads(source.read_text()), RESULTS / "throughput.png")
        print(f"wrote {target}")
        return

    sizes = SMOKE if args.smoke else FULL
    if args.seconds:
        sizes = replace(sizes, seconds=args.seconds)
    if args.concurrency:
        sizes = replace(sizes, concurrency=tuple(args.concurrency))
    if args.sweep_only:
        sizes = replace(sizes, chunk_steps=(), stateless_requests=0)
    systems = [service(True), service(False), baseline("floor"), baseline("naive")]
    notes: list[str] = []
    wanted = args.only or [s.name for s in systems] + ([] if args.smoke else ["pytriton"])
    if "pytriton" in wanted:
        report.note("pytriton: preparing its virtualenv and weights (cached after the first run)")
        try:
            systems.append(pytriton_system())
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            notes.append(f"PyTriton peer left out: could not prepare it ({exc}) {detail[-500:]}")
    elif args.smoke:
        notes.append("PyTriton peer left out of the smoke run (`--only pytriton` runs it)")
    systems = [s for s in systems if s.name in wanted]
    for text in notes:
        report.note(text)
    with tempfile.TemporaryDirectory(prefix="lstm-bench-") as tmp:
        try:
            results = run(systems, sizes, args.workers, Path(tmp), notes)
        except Exception:
            for log in sorted(Path(tmp).glob("*.log")):
                print(f"--- {log.name} (last lines)", file=sys.stderr)
                print(
                    "\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr
                )
            raise
    print(report.tables(results))
    out = args.out or (None if args.smoke else RESULTS)
    if out is not None:
        stem = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
        for path in report.write(results, out, stem):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""1-step chunks over the WebSocket stream against the single HTTP chunk route, one run.

    python -m bench.websocket            64 sessions, 8 s windows, alternating transports
    python -m bench.websocket --smoke    tiny sizes (CI: both transports answer)

One Redis and one `lstm-serve` (1 worker); the load generator in its own process
(`bench.load`, on uvloop): HTTP/1.1 keep-alive with JSON bodies, the route as clients use
it today, and WebSockets with binary frames. It shares the CPUs with the server, so its
own CPU per chunk is printed too. Windows alternate (HTTP, WS, HTTP, WS...) so that a
change in the machine's load hits both; the ratio is of the medians.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.run import FEATURES, MODEL, load
from bench.systems import Server, service
from service.store.embedded import EmbeddedRedis

TARGET = 3.0


def measure(sessions: int, seconds: float, rounds: int, log_dir: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"http": [], "websocket": []}
    with (
        EmbeddedRedis(log_dir / "redis") as redis_server,
        Server(service(micro_batch=True), redis_server.url, 1, log_dir / "service.log") as server,
    ):
        for round_index in range(rounds):
            for transport in runs:
                result = load(
                    server,
                    concurrency=sessions,
                    steps=1,
                    warmup_seconds=min(2.0, seconds / 2),
                    seconds=seconds,
                    min_requests=sessions,
                    websocket=transport == "websocket",
                    session_prefix=f"{transport}-{round_index}",
                )
                runs[transport].append(result)
                print(
                    f"{transport:>9}: {result['throughput']:8,.0f} chunks/s  "
                    f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
                    f"server CPU {result['server_cpu_ms_per_request']:.2f} ms/chunk  "
                    f"client CPU {result['client_cpu_ms_per_request']:.3f} ms/chunk",
                    flush=True,
                )
    http = statistics.median(run["throughput"] for run in runs["http"])
    ws = statistics.median(run["throughput"] for run in runs["websocket"])
    return {
        "model": MODEL,
        "features": FEATURES,
        "sessions": sessions,
        "http_chunks_per_second": http,
        "websocket_chunks_per_second": ws,
        "ratio": ws / http,
        "target": TARGET,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions, args.seconds, args.rounds = 4, 0.5, 1
    with tempfile.TemporaryDirectory() as scratch:
        results = measure(args.sessions, args.seconds, args.rounds, Path(scratch))
    print(
        f"1-step chunks, {results['sessions']} sessions: WebSocket "
        f"{results['websocket_chunks_per_second']:,.0f} chunks/s, HTTP "
        f"{results['http_chunks_per_second']:,.0f} chunks/s: {results['ratio']:.2f}x "
        f"(target {TARGET:.0f}x)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

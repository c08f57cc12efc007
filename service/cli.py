"""`lstm-serve`: run the API with uvicorn, starting an embedded Redis when none is configured."""

import argparse
import logging
import logging.config
import os
import signal
import socket
import tempfile
from types import FrameType

import uvicorn

from service.api.read_timeouts import http_protocol
from service.api.ws_protocol import LeanWebSocketProtocol
from service.logs import logging_config
from service.metrics import MULTIPROCESS_DIR_ENV
from service.settings import Settings
from service.store.embedded import redis_url_or_embedded

# uvicorn kills a worker that does not answer its supervisor's ping within this time. Its
# default (5 s) kills workers still importing TensorFlow or compiling kernels on a busy
# host (both hold the GIL for seconds), and the replacement dies the same way.
WORKER_HEALTHCHECK_SECONDS = 120


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises SIGTERM after its graceful shutdown; leaving through SystemExit
    # instead of the default handler's abrupt end runs the cleanup in main().
    raise SystemExit(0)


def _refuse_busy_port(host: str, port: int) -> None:
    """Exit if something already listens on the gRPC port. The workers bind it with
    SO_REUSEPORT to share it; without this check a second `lstm-serve` of the same user
    would silently share it too, and get half of the other one's connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"lstm-serve: gRPC port {host}:{port} is not free: {exc}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="lstm-serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--grpc-port",
        type=int,
        help="gRPC port (default: LSTM_GRPC_PORT, else 8001); 0 turns gRPC off",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--http",
        choices=("auto", "httptools", "h11"),
        default="auto",
        help="HTTP/1.1 parser (default: httptools when installed, else h11)",
    )
    args = parser.parse_args(argv)
    log_config = logging_config(args.log_level)
    logging.config.dictConfig(log_config)
    metrics_dir = None
    if args.workers > 1 and not os.environ.get(MULTIPROCESS_DIR_ENV):
        # Each worker writes its metrics to files here and /metrics sums them all.
        metrics_dir = tempfile.TemporaryDirectory(prefix="lstm-metrics-")
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir.name

    # The workers read their settings from the environment.
    os.environ["LSTM_GRPC_HOST"] = args.host
    if args.grpc_port is not None:
        os.environ["LSTM_GRPC_PORT"] = str(args.grpc_port)
    settings = Settings()
    if settings.grpc_port:
        _refuse_busy_port(args.host, settings.grpc_port)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Started here, not per worker, so every worker shares the one Redis.
    redis_url, embedded = redis_url_or_embedded(settings.redis_url, settings.data_dir)
    os.environ["LSTM_REDIS_URL"] = redis_url
    try:
        uvicorn.run(
            "service.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            log_level=args.log_level,
            log_config=log_config,
            access_log=False,  # the app writes its own JSON access log
            http=http_protocol(args.http),
            # Measured (docs/benchmarks.md, WebSocket): the sans-I/O `websockets` protocol
            # costs the least CPU per message; the legacy one and wsproto cost 10-15% more.
            # Its subclass here cuts and frames whole data frames itself.
            ws=LeanWebSocketProtocol,
        )
    finally:
        if embedded:
            embedded.stop()
        if metrics_dir:
            metrics_dir.cleanup()


if __name__ == "__main__":
    main()

"""Prometheus metrics: the HTTP and gRPC layers' own, and the `Telemetry` of core and store.

One `PrometheusMetrics` per app, each with its own registry (no globals). Label children are
cached in plain dicts so an observation on the hot path is a dict lookup and a locked add.

With several worker processes (`lstm-serve --workers N`), `lstm-serve` points the
`PROMETHEUS_MULTIPROC_DIR` environment variable at a fresh directory before the workers
start; prometheus_client then keeps every value in a per-process file there, and a scrape of
any worker reads and sums all of them.
"""

import os
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUNNER_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0)
REDIS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.0)
# Fine below 10 ms: a few milliseconds of lag is the difference between a fair and an
# unfair share of the loop for 1-step chunks (idle p99 ~1-2 ms).
LOOP_LAG_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015,
    0.02, 0.03, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
# Clients choose the method: anything else is counted as "other", to bound the label values.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR_ENV))


class PrometheusMetrics:
    """Every metric the service exposes; implements `service.telemetry.Telemetry`."""

    def __init__(self) -> None:
        # The `_created` series double the output and no dashboard here reads them.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry()
        http_labels = ["method", "route", "status"]
        self.http_requests = Counter(
            "lstm_http_requests",
            "HTTP requests answered, by method, route template and status.",
            http_labels,
            registry=registry,
        )
        self.http_duration = Histogram(
            "lstm_http_request_duration_seconds",
            "Time from request start to the last byte of the response.",
            http_labels,
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        grpc_labels = ["method", "code"]
        self.grpc_requests = Counter(
            "lstm_grpc_requests",
            "gRPC calls answered (each message of a stream counts once), by method and status.",
            grpc_labels,
            registry=registry,
        )
        self.grpc_duration = Histogram(
            "lstm_grpc_request_duration_seconds",
            "Time from a gRPC call's (or stream message's) arrival to its answer.",
            grpc_labels,
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.stream_chunks = Counter(
            "lstm_stream_chunks",
            "Chunks answered on long-lived streams (one per WebSocket message), by transport "
            "and outcome: applied, replayed, or the error code.",
            ["transport", "outcome"],
            registry=registry,
        )
        self.streams_open = Gauge(
            "lstm_streams_open",
            "Streams (WebSockets) open now, by transport.",
            ["transport"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.errors = Counter(
            "lstm_errors", "Error responses, by stable error code.", ["code"], registry=registry
        )
        self.timesteps = Counter(
            "lstm_timesteps",
            "Timesteps run through a model's streaming runner.",
            ["model"],
            registry=registry,
        )
        self.runner_duration = Histogram(
            "lstm_runner_duration_seconds",
            "Time in the streaming runner, per call.",
            ["model"],
            buckets=RUNNER_BUCKETS,
            registry=registry,
        )
        self.redis_duration = Histogram(
            "lstm_redis_duration_seconds",
            "Redis round-trip time, by operation.",
            ["operation"],
            buckets=REDIS_BUCKETS,
            registry=registry,
        )
        self.sessions = Counter(
            "lstm_sessions",
            "Session lifecycle events: created, reset, deleted.",
            ["event"],
            registry=registry,
        )
        self.loop_lag = Histogram(
            "lstm_event_loop_lag_seconds",
            "How late the event loop ran a timer (probed every `loop_lag_probe_ms`): time a "
            "request waits behind a long callback or another thread holding the GIL.",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.loop_own_lag = Histogram(
            "lstm_event_loop_own_lag_seconds",
            "The event loop's lag less its thread's wait for a CPU (Linux): the part of the lag "
            "this process's own work caused (long callbacks, waits for the GIL).",
            buckets=LOOP_LAG_BUCKETS,
            registry=registry,
        )
        self.models_loaded = Gauge(
            "lstm_model_loaded",
            "1 for each model this service serves, by name and version.",
            ["model", "version"],
            multiprocess_mode="max",
            registry=registry,
        )
        if not multiprocess_mode():
            ProcessCollector(registry=registry)
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._grpc: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._runner: dict[str, tuple[Counter, Histogram]] = {}
        self._redis: dict[str, Histogram] = {}
        self._events: dict[str, Counter] = {}
        self._codes: dict[str, Counter] = {}
        self._stream_chunks: dict[tuple[str, str], Counter] = {}

    def request_done(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "other"
        key = (method, route, status)
        children = self._http.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self.http_requests.labels(*labels), self.http_duration.labels(*labels)
            self._http[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def grpc_done(self, method: str, code: str, seconds: float) -> None:
        key = (method, code)
        children = self._grpc.get(key)
        if children is None:
            children = self.grpc_requests.labels(*key), self.grpc_duration.labels(*key)
            self._grpc[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def stream_chunk(self, transport: str, outcome: str) -> None:
        key = (transport, outcome)
        child = self._stream_chunks.get(key)
        if child is None:
            child = self._stream_chunks[key] = self.stream_chunks.labels(*key)
        child.inc()

    def stream_opened(self, transport: str) -> None:
        self.streams_open.labels(transport).inc()

    def stream_closed(self, transport: str) -> None:
        self.streams_open.labels(transport).dec()

    def error(self, code: str) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.errors.labels(code)
        child.inc()

    def set_models(self, models: Iterable[tuple[str, str]]) -> None:
        """The versions served now (those unloaded since leave the gauge)."""
        self.models_loaded.clear()
        for name, version in models:
            self.models_loaded.labels(name, version).set(1)

    def model_ran(self, model: str, steps: int, seconds: float) -> None:
        children = self._runner.get(model)
        if children is None:
            children = self.timesteps.labels(model), self.runner_duration.labels(model)
            self._runner[model] = children
        children[0].inc(steps)
        children[1].observe(seconds)

    def store_call(self, operation: str, seconds: float) -> None:
        child = self._redis.get(operation)
        if child is None:
            child = self._redis[operation] = self.redis_duration.labels(operation)
        child.observe(seconds)

    def session_event(self, event: str) -> None:
        child = self._events.get(event)
        if child is None:
            child = self._events[event] = self.sessions.labels(event)
        child.inc()

    def loop_lagged(self, seconds: float, own: float | None) -> None:
        self.loop_lag.observe(seconds)
        if own is not None:
            self.loop_own_lag.observe(own)

    def exposition(self) -> bytes:
        """The text format; with several workers, the sum over all of them."""
        if multiprocess_mode():
            merged = CollectorRegistry()
            MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged)
        return generate_latest(self.registry)

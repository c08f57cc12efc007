from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_MODEL_DIR = Path(__file__).parent / "demo_models"
U32_MAX = 2**32 - 1


class Settings(BaseSettings):
    """Service configuration, read from environment variables prefixed `LSTM_`."""

    # Each field's docstring becomes its description (docs/deployment.md's table is built from it).
    model_config = SettingsConfigDict(
        env_prefix="LSTM_", extra="ignore", use_attribute_docstrings=True
    )

    redis_url: str | None = None
    """Redis URL (`redis://host:port/db`, `rediss://` for TLS). A Redis Cluster is named by
    one seed node as `redis+cluster://host:port` (or `rediss+cluster://`). Unset: start an
    embedded redis-server."""

    redis_cluster: bool = False
    """Treat `redis_url` as a Redis Cluster seed node even with a plain `redis://` scheme."""

    redis_timeout_seconds: float = Field(2.0, gt=0)
    """Socket timeout for every Redis call, never retried by the client; past it the request
    fails with 503 `store_unavailable`."""

    model_dir: Path = DEMO_MODEL_DIR
    """The model repository: `<name>/<version>/model.keras` (or `model.h5`) with integer
    versions, and flat `<name>.keras` / `<name>.h5` files (version 1). Keras 3 files and
    Keras 2 files (`.h5`, `tf_keras` `.keras`) alike."""

    model_version_policy: str = Field("all", pattern=r"^(all|latest(:[1-9][0-9]*)?)$")
    """Which versions of each model are served: `all`, or `latest:N` (the N highest that
    load and pass the probe; `latest` is `latest:1`)."""

    model_poll_seconds: float = Field(0.0, ge=0)
    """How often the repository is scanned for new, changed and removed versions. 0: only
    at start and on `POST /v1/models/{name}/reload`."""

    gil_switch_interval_ms: float = Field(0.5, gt=0, le=100)
    """How long a thread running Python may keep the interpreter lock while another waits for
    it (`sys.setswitchinterval`; Python's default is 5 ms). Heavy work holds the lock in
    slices of a fraction of a millisecond between its GIL-free kernel calls; the event loop
    waits up to this for the lock each time it wakes while heavy work runs Python."""

    heavy_work_nice: int = Field(10, ge=0, le=19)
    """How much lower the heavy-work thread's scheduling priority is than the rest of the
    process (Linux niceness, per thread; 0: the same). Where cores are busy, the kernel then
    runs the event loop, which serves every short chunk, before long work."""

    loop_lag_probe_ms: float = Field(10.0, ge=0)
    """How often the event loop's lag is probed (`lstm_event_loop_lag_seconds`: how late a
    timer ran, what every request waits behind long work). 0: not probed."""

    data_dir: Path = Path.home() / ".local" / "share" / "lstm-stream" / "redis"
    """Where the embedded Redis keeps its AOF files, so sessions survive a restart.
    One embedded Redis per directory."""

    session_ttl_seconds: int = Field(86_400, gt=0)
    """Default session lifetime, refreshed on every write; at most `max_session_ttl_seconds`."""

    max_session_ttl_seconds: int = Field(30 * 86_400, gt=0, le=U32_MAX)
    """Largest `ttl_seconds` a client may ask for (the session record holds it in 32 bits)."""

    max_chunk_steps: int = Field(10_000, gt=0)
    """Most timesteps in one session chunk."""

    max_predict_steps: int = Field(100_000, gt=0)
    """Most timesteps in one stateless predict call."""

    recent_records: int = Field(10_000, ge=0)
    """Sessions whose last record each process keeps, so that their next chunk skips the
    read from Redis (its compare-and-set checks the whole record, so answers stay exact
    behind any balancer; it pays when a balancer sends a session to the same replica).
    0: always read."""

    max_chunks_per_request: int = Field(256, gt=0)
    """Most chunks in one `POST /v1/chunks` request."""

    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0)
    """Largest request body accepted; larger is 413 `payload_too_large`, before it is read."""

    max_body_bytes_per_key: int = Field(32 * 1024 * 1024, gt=0)
    """Most bytes of large request bodies (over 64 KiB) one API key may have being read and
    parsed at once, per process; one more is 429 `rate_limited` with `Retry-After`, before
    it is read. At least `max_body_bytes`."""

    max_body_bytes_total: int = Field(64 * 1024 * 1024, gt=0)
    """The same for all keys together, per process. At least `max_body_bytes_per_key`."""

    header_timeout_seconds: float = Field(10.0, gt=0)
    """Longest a client may take to send a request's headers, from connecting or from the
    request's first byte; past it the connection is closed (`lstm-serve` only)."""

    body_timeout_seconds: float = Field(30.0, gt=0)
    """Longest pause allowed between two reads of a request body; past it the connection is
    closed (`lstm-serve` only)."""

    max_sessions_per_key: int = Field(10_000, ge=0)
    """Most live sessions one API key may hold (without API keys, all clients share one
    count); creating one more is 429 `too_many_sessions`. 0: no limit."""

    max_heavy_per_key: int = Field(2, gt=0)
    """Most requests of more than 32 timesteps (batch x steps), or with a body over 64 KiB,
    one API key may have in progress per process; one more is 429 `rate_limited` with
    `Retry-After` (for a large body, before it is read)."""

    max_heavy_total: int = Field(4, gt=0)
    """Most requests of more than 32 timesteps in progress per process, all keys together;
    one more is 429 `rate_limited` with `Retry-After`."""

    max_tensor_bytes: int = Field(64 * 1024 * 1024, gt=0)
    """Largest memory one request's tensors may take as float32 (inputs, outputs and one
    recurrent state per sequence); more is 413 `payload_too_large`."""

    rate_limit_per_key: float = Field(0.0, ge=0)
    """Requests per second one API key may send to `/v1` and `/v2`, per process (a token
    bucket); faster is 429 `rate_limited` with `Retry-After`. 0: no limit."""

    rate_limit_burst: int = Field(0, ge=0)
    """Requests one API key may send at once above `rate_limit_per_key`. 0: one second's
    worth."""

    api_keys: SecretStr | None = None
    """Comma-separated API keys, each of letters, digits and `-._~+/` (a bearer token). Set:
    `/v1` and `/v2` (not the health routes) need `Authorization: Bearer <key>`, and each key
    sees only its own sessions. Any other character stops the service from starting."""

    admin_api_keys: SecretStr | None = None
    """Comma-separated admin keys: the only keys that may call `POST /v1/models/{name}/reload`
    when `api_keys` or these are set. With API keys set and no admin key, nobody may."""

    api_keys_file: Path | None = None
    """A file of API keys, one per line (a line starting with `#` is a comment), read at start
    and added to `api_keys`; for keys mounted as secrets."""

    grpc_port: int = Field(8001, ge=0, le=65535)
    """Port of the gRPC server (Triton's `inference.GRPCInferenceService`, the same models
    and sessions as `/v2`), run beside HTTP in each worker process. 0: no gRPC server."""

    grpc_host: str = "127.0.0.1"
    """Interface the gRPC server listens on; `lstm-serve` sets it to its `--host`."""

    access_log: bool = True
    """Log one JSON line per request (logger `lstm.access`)."""

    chunk_fast_path: bool = True
    """Answer well-formed `POST /v1/sessions/{id}/predict` requests without FastAPI's
    routing and parameter solving (the same route function and middleware). Off: through
    FastAPI like every other route."""

    micro_batch: bool = True
    """Run the waiting chunks of concurrent sessions on one model as one batched runner
    call (bit-exact: the runner computes each row alone); a chunk arriving alone after a
    batch of one runs at once. Off: every chunk runs alone."""

    coalesce_writes: bool = True
    """Send the compare-and-sets that chunks issue in the same event-loop turn as one
    Redis call (each still checked and applied on its own). Off: one call per chunk."""

    micro_batch_max: int = Field(64, gt=0)
    """Most chunks in one batched runner call."""

    micro_batch_wait_ms: float = Field(0.0, ge=0)
    """How long a chunk waits for others to join its batch. 0: it takes only the chunks
    already waiting in the same event-loop turn, and adds no delay."""

    kernel_cache_dir: Path | None = Path.home() / ".cache" / "lstm-stream" / "kernels"
    """Where the compiled kernels are cached (numba's cache, under a digest of the kernel
    sources), so a restart loads them instead of compiling (~20 s of CPU). Several
    processes may share it; the container image fills it at build time. Empty: compile
    in memory at every start."""

    probe_steps: int = Field(64, gt=0)
    """Length of the probe sequence each model is checked on against Keras at load."""

    probe_tolerance: float = Field(1e-5, gt=0)
    """Largest difference from Keras `model.predict` on the probe that a model may show."""

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator(
        "api_keys", "api_keys_file", "kernel_cache_dir", "admin_api_keys", mode="before"
    )
    @classmethod
    def _empty_keys_are_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _body_budgets_hold_a_body(self) -> Self:
        if not self.max_body_bytes <= self.max_body_bytes_per_key <= self.max_body_bytes_total:
            raise ValueError(
                f"max_body_bytes ({self.max_body_bytes}) <= max_body_bytes_per_key "
                f"({self.max_body_bytes_per_key}) <= max_body_bytes_total "
                f"({self.max_body_bytes_total}) must hold: a body allowed alone must fit"
            )
        return self

    @model_validator(mode="after")
    def _default_ttl_within_the_limit(self) -> Self:
        if self.session_ttl_seconds > self.max_session_ttl_seconds:
            raise ValueError(
                f"session_ttl_seconds ({self.session_ttl_seconds}) exceeds "
                f"max_session_ttl_seconds ({self.max_session_ttl_seconds})"
            )
        return self

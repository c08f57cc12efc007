"""The only wiring point: settings in, a FastAPI app out."""

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.allocator import reuse_large_buffers
from service.api.auth import ApiKeyAuth, ApiKeys, load_admin_keys, load_api_keys
from service.api.docs import install_docs
from service.api.errors import install_error_handlers
from service.api.fast_path import ChunkFastPath
from service.api.grpc.server import GrpcServer
from service.api.head import HeadAsGet
from service.api.limits import BodyAdmission
from service.api.observe import RequestObserver, route_templates
from service.api.openapi import install_openapi
from service.api.rate_limit import KeyRateLimit
from service.api.routes import chunks, health, metrics, models, sessions, stream, v2
from service.core.batcher import MicroBatcher
from service.core.fairness import BodyBytes
from service.core.kernel_cache import compile_kernels
from service.core.repository import ModelRegistry, VersionPolicy
from service.core.sequences import SequenceService
from service.core.sessions import SessionLimits, SessionService
from service.loop_lag import probe_loop_lag
from service.metrics import PrometheusMetrics
from service.settings import Settings
from service.store.base import StateStore
from service.store.coalesced import CoalescedWrites
from service.store.embedded import redis_url_or_embedded
from service.store.redis_store import RedisStateStore
from service.store.session_index import RedisSessionIndex
from service.store.timed import TimedStateStore

log = logging.getLogger(__name__)

DESCRIPTION = """
Streaming inference for Keras recurrent models (LSTM, GRU, SimpleRNN).

Send a sequence in chunks to a **session**; its recurrent state lives in Redis between
chunks, so any replica serves any chunk, and the outputs of any chunking are bit-identical
to one call of `POST /v1/models/{model}/predict` on the whole sequence.

Errors are `{"error": {"code": "...", "message": "..."}}` with a stable `code`.

`GET /v1/sessions/{session_id}/stream` (not listed below: OpenAPI has no WebSockets) is the
chunk route over one WebSocket: each message a chunk (its JSON body, or little-endian
float32 rows in a binary frame, offset `?offset=n` then the next step), each answer a
message in the same encoding, errors as `{"error": ...}` text messages.
"""


async def poll(models: ModelRegistry, seconds: float) -> None:
    """Rescan the repository every `seconds`: each replica and worker converges on the
    same versions by itself, and their fingerprints agree without coordination."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(models.refresh)
        except Exception:  # a failed scan must not stop the next one
            log.exception("scanning the model repository failed")


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    settings = settings or Settings()
    telemetry = PrometheusMetrics()
    api_keys = load_api_keys(settings)
    admin_keys = load_admin_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis_url, embedded = redis_url_or_embedded(settings.redis_url, settings.data_dir)
        redis_store = RedisStateStore.from_url(
            redis_url, settings.redis_timeout_seconds, cluster=settings.redis_cluster
        )
        store: StateStore = TimedStateStore(redis_store, telemetry)
        if settings.coalesce_writes:
            store = CoalescedWrites(store)
        compile_seconds = await asyncio.to_thread(compile_kernels, settings.kernel_cache_dir)
        if compile_seconds:
            log.info(
                "kernels ready in %.1f s (cache %s)", compile_seconds, settings.kernel_cache_dir
            )
        models = registry
        if models is None:
            models = await asyncio.to_thread(
                ModelRegistry.from_directory,
                settings.model_dir,
                settings.probe_steps,
                settings.probe_tolerance,
                VersionPolicy.parse(settings.model_version_policy),
                lambda changed: telemetry.set_models(
                    (model.name, model.version) for model in changed.loaded()
                ),
            )
        telemetry.set_models((model.name, model.version) for model in models.loaded())
        app.state.settings = settings
        app.state.sessions = SessionService(
            store,
            models,
            SessionLimits.from_settings(settings),
            telemetry=telemetry,
            index=RedisSessionIndex(redis_store.client, telemetry),
            batcher=(
                MicroBatcher(
                    settings.micro_batch_max, settings.micro_batch_wait_ms / 1000, telemetry
                )
                if settings.micro_batch
                else None
            ),
        )
        app.state.sequences = SequenceService(app.state.sessions)
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        reuse_large_buffers()
        # TensorFlow and Keras leave ~400k long-lived objects; a full garbage collection
        # walking them stalls every request for 100-300 ms, every few seconds under load.
        # Frozen, they are skipped, and collections only see what requests allocate.
        gc.collect()
        gc.freeze()
        # Built now rather than by the first request (it names the routes in metrics and
        # logs): ~0.5 s of Python that would hold the event loop while requests wait.
        app.openapi()
        grpc_server = None
        background = []
        if settings.model_poll_seconds > 0 and registry is None:
            background.append(asyncio.create_task(poll(models, settings.model_poll_seconds)))
        if settings.loop_lag_probe_ms > 0:
            interval = settings.loop_lag_probe_ms / 1000
            background.append(asyncio.create_task(probe_loop_lag(interval, telemetry.loop_lagged)))
        try:
            if settings.grpc_port:
                keys = ApiKeys(api_keys) if api_keys else None
                grpc_server = GrpcServer(settings, app.state.sequences, keys, telemetry)
                await grpc_server.start()
            yield
        finally:
            if grpc_server:
                await grpc_server.stop()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.sessions.heavy.close()
            await store.close()
            if embedded:
                embedded.stop()

    app = FastAPI(
        title="lstm-stream",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from packaged assets
        redoc_url=None,
    )
    app.state.metrics = telemetry
    install_error_handlers(app)
    # Added innermost first: RequestObserver sees everything, then auth, then the rate limit
    # (it needs the key), then the admission of bodies (it needs the key too), then the chunk
    # route's fast path.
    if settings.chunk_fast_path:
        app.add_middleware(ChunkFastPath, service=app)
    app.add_middleware(
        BodyAdmission,
        max_bytes=settings.max_body_bytes,
        budget=BodyBytes(settings.max_body_bytes_per_key, settings.max_body_bytes_total),
    )
    if settings.rate_limit_per_key > 0:
        app.add_middleware(
            KeyRateLimit, per_second=settings.rate_limit_per_key, burst=settings.rate_limit_burst
        )
    if api_keys or admin_keys:
        app.add_middleware(
            ApiKeyAuth,
            keys=ApiKeys(api_keys) if api_keys else None,
            admin=ApiKeys(admin_keys) if admin_keys else None,
        )
    app.add_middleware(HeadAsGet)
    app.add_middleware(
        RequestObserver,
        metrics=telemetry,
        templates=lambda: route_templates(app),
        log_requests=settings.access_log,
    )
    app.include_router(models.router)
    app.include_router(sessions.router)
    app.include_router(stream.router)
    app.include_router(chunks.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(v2.router)  # last: its /v2 catch-all answers unknown V2 paths
    install_docs(app)
    install_openapi(app, secured=bool(api_keys))
    return app

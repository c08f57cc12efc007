"""The only wiring point: settings in, a FastAPI app out."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.api.errors import install_error_handlers
from service.api.limits import BodySizeLimit
from service.api.routes import health, models, sessions, v2
from service.core.models import ModelRegistry
from service.core.sessions import SessionLimits, SessionService
from service.settings import Settings
from service.store.embedded import EmbeddedRedis
from service.store.redis_store import RedisStateStore

log = logging.getLogger(__name__)

DESCRIPTION = """
Streaming inference for Keras recurrent models (LSTM, GRU, SimpleRNN).

Send a sequence in chunks to a **session**; its recurrent state lives in Redis between
chunks, so any replica serves any chunk, and the outputs of any chunking are bit-identical
to one call of `POST /v1/models/{model}/predict` on the whole sequence.

Errors are `{"error": {"code": "...", "message": "..."}}` with a stable `code`.
"""


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedded = None
        redis_url = settings.redis_url
        if redis_url is None:
            embedded = EmbeddedRedis(settings.data_dir).start()
            redis_url = embedded.url
            log.warning("LSTM_REDIS_URL is unset: using an embedded redis-server at %s", redis_url)
        store = RedisStateStore.from_url(
            redis_url, settings.redis_timeout_seconds, cluster=settings.redis_cluster
        )
        models = registry
        if models is None:
            models = await asyncio.to_thread(
                ModelRegistry.from_directory,
                settings.model_dir,
                settings.probe_steps,
                settings.probe_tolerance,
            )
        app.state.settings = settings
        app.state.sessions = SessionService(
            store,
            models,
            SessionLimits(
                default_ttl_seconds=settings.session_ttl_seconds,
                max_ttl_seconds=settings.max_session_ttl_seconds,
                max_chunk_steps=settings.max_chunk_steps,
                max_predict_steps=settings.max_predict_steps,
            ),
        )
        try:
            yield
        finally:
            await store.close()
            if embedded:
                embedded.stop()

    app = FastAPI(
        title="lstm-stream",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(models.router)
    app.include_router(sessions.router)
    app.include_router(health.router)
    app.include_router(v2.router)  # last: its /v2 catch-all answers unknown V2 paths
    return app

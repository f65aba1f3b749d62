"""The HTTP API: a thin door onto the journeys in Temporal and the read model in Postgres."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI
from prometheus_client import start_http_server

from api.callbacks import Callbacks
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.guards import Limits
from api.idempotency import Idempotency
from api.journeys import Journeys
from api.limits import BodyLimit
from api.live import EventFeed
from api.routes import (
    callbacks,
    deletions,
    events,
    health,
    payments,
    prompts,
    replicate_webhook,
    stripe_webhook,
    versions,
)
from api.state import AppState
from ecomdream.clients.replicate import create_replicate_client
from ecomdream.clients.storage import Storage
from ecomdream.clients.stripe import create_stripe_client
from ecomdream.clients.temporal import connect_from_settings
from ecomdream.config import Settings
from ecomdream.db.session import create_engine, create_sessionmaker
from ecomdream.metrics import observe_http

log = logging.getLogger("ecomdream.api")


async def build_state(settings: Settings, stack: AsyncExitStack) -> AppState:
    """Open every long-lived client; they close when stack closes."""
    engine = create_engine(settings.database_url.get_secret_value(), pool_size=settings.database_pool_size)
    stack.push_async_callback(engine.dispose)
    # Lazy: the API starts (and /ready says why) even while Temporal is still coming up.
    temporal = await connect_from_settings(settings, lazy=True)
    storage = await Storage.from_settings(settings, stack)
    sessionmaker = create_sessionmaker(engine)
    feed = EventFeed(settings.database_url.get_secret_value())
    stack.push_async_callback(feed.close)
    return AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        read_sessionmaker=create_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT")),
        temporal=temporal,
        journeys=Journeys(temporal, settings.temporal_task_queue, settings.journey_prompts_per_run),
        limits=Limits(settings),
        idempotency=Idempotency(sessionmaker),
        storage=storage,
        stripe=create_stripe_client(settings, stack),
        replicate=create_replicate_client(settings, stack=stack),
        callbacks=Callbacks.from_settings(settings),
        feed=feed,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; settings default to the environment."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if settings.metrics_port:
                server, _ = start_http_server(settings.metrics_port, settings.metrics_host)
                stack.callback(server.shutdown)
            app.state.ecomdream = await build_state(settings, stack)
            log.info("API ready (providers: %s)", settings.provider_mode)
            yield

    app = FastAPI(
        title="ecomdream",
        description="Pay, upload photos, train a personal image model, generate images.",
        version="0.1.0",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    app.middleware("http")(observe_http)  # outside the limit, so refused bodies are counted too
    app.include_router(health.router)
    app.include_router(payments.router)
    app.include_router(callbacks.router)
    app.include_router(stripe_webhook.router)
    app.include_router(versions.router)
    app.include_router(events.router)
    app.include_router(deletions.router)
    app.include_router(prompts.router)
    app.include_router(replicate_webhook.router)
    return app

"""What the API process holds for its lifetime, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

import stripe
from replicate.client import Client as ReplicateClient
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.callbacks import Callbacks
from api.guards import Limits
from api.idempotency import Idempotency
from api.journeys import Journeys
from api.live import EventFeed
from ecomdream.clients.storage import Storage
from ecomdream.config import Settings
from ecomdream.db.session import SessionMaker


@dataclass
class AppState:
    """Long-lived clients shared by every request."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: SessionMaker
    read_sessionmaker: SessionMaker
    temporal: Client
    journeys: Journeys
    limits: Limits
    idempotency: Idempotency
    storage: Storage
    stripe: stripe.StripeClient
    replicate: ReplicateClient
    callbacks: Callbacks
    feed: EventFeed
    replicate_webhook_secret: str | None = None
    # When the secret was last fetched from Replicate (monotonic seconds); None when it came from settings.
    replicate_secret_fetched_at: float | None = None

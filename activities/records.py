"""Read-model activities: versions in Postgres. One transaction each, safe to run twice."""

from __future__ import annotations

import uuid

from temporalio import activity

from ecomdream.contracts.training import VersionCreate, VersionOutcome
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.models import VersionStatus
from ecomdream.repositories.versions import VersionRepository


class RecordActivities:
    """Activities that only need the database."""

    def __init__(self, sessionmaker: SessionMaker) -> None:
        self.sessionmaker = sessionmaker

    @activity.defn
    async def create_version(self, version: VersionCreate) -> None:
        """Record the new model and link it to its payment (upsert on the version id)."""
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).create(
                version_id=version.version_id,
                payment_id=version.payment_id,
                class_name=version.class_name,
                trigger_token=version.trigger_token,
                images_count=version.images_count,
                images_quota=version.images_quota,
            )

    @activity.defn
    async def record_version_outcome(self, outcome: VersionOutcome) -> None:
        """Mark the model ready or failed."""
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).set_outcome(
                outcome.version_id,
                VersionStatus(outcome.status),
                activity.info().started_time,
                outcome.model_version,
                outcome.error,
            )

    @activity.defn
    async def reopen_version(self, version_id: uuid.UUID) -> None:
        """An operator retries a failed training: the model shows as training again (no-op unless failed)."""
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).reopen(version_id)

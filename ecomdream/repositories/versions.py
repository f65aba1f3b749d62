"""Trained models (versions) in Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.models import Payment, Version, VersionStatus


class VersionRepository:
    """Versions, their training and their quota."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, version_id: uuid.UUID) -> Version | None:
        """One version by id."""
        return await self.session.get(Version, version_id)

    async def create(
        self,
        *,
        version_id: uuid.UUID,
        payment_id: uuid.UUID,
        class_name: str,
        trigger_token: str,
        images_count: int,
        images_quota: int,
    ) -> None:
        """Record a model whose photos were accepted, and link it to its payment.

        Running it twice changes nothing; a new upload for the same model (its photos were lost before
        training) shows it as training again, with the new upload's class and count.
        """
        values = {
            "status": VersionStatus.TRAINING.value,
            "class_name": class_name,
            "trigger_token": trigger_token,
            "images_count": images_count,
            "progress": 0.0,
        }
        statement = insert(Version).values(
            id=version_id, payment_id=payment_id, images_quota=images_quota, **values
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=[Version.id],
                set_={**values, "error": None, "failed_at": None},
                where=Version.status == VersionStatus.FAILED.value,
            )
        )
        await self.session.execute(
            update(Payment).where(Payment.id == payment_id).values(version_id=version_id)
        )

    async def set_training(self, version_id: uuid.UUID, training_id: str, zip_key: str) -> None:
        """The training was submitted."""
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id)
            .values(
                status=VersionStatus.TRAINING.value,
                training_id=training_id,
                training_zip_key=zip_key,
                progress=func.coalesce(Version.progress, 0.0),
                training_started_at=func.coalesce(Version.training_started_at, func.now()),
            )
        )

    async def reopen(self, version_id: uuid.UUID) -> None:
        """A failed model is being trained again: back to training, its failure cleared."""
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id, Version.status == VersionStatus.FAILED.value)
            .values(
                status=VersionStatus.TRAINING.value,
                training_id=None,
                error=None,
                failed_at=None,
                progress=0.0,
                training_started_at=func.now(),
            )
        )

    async def set_progress(self, version_id: uuid.UUID, progress: float) -> None:
        """Latest training progress; never moves backwards."""
        await self._raise_progress(Version.id == version_id, progress)

    async def set_training_progress(self, training_id: str, progress: float) -> None:
        """Latest progress of the version that this Replicate training trains; never moves backwards."""
        await self._raise_progress(Version.training_id == training_id, progress)

    async def _raise_progress(self, which: ColumnElement[bool], progress: float) -> None:
        await self.session.execute(
            update(Version)
            .where(which, Version.status == VersionStatus.TRAINING.value)
            .values(progress=func.greatest(func.coalesce(Version.progress, 0.0), progress))
        )

    async def set_outcome(
        self,
        version_id: uuid.UUID,
        status: VersionStatus,
        at: datetime,
        model_version: str | None,
        error: str | None,
    ) -> None:
        """Ready (with the trained model version) or failed (with a reason)."""
        values: dict[str, object] = {"status": status.value, "error": error}
        if status is VersionStatus.READY:
            values |= {
                "model_version": model_version,
                "ready_at": func.coalesce(Version.ready_at, at),
                "progress": 1.0,
            }
        else:
            values |= {"failed_at": func.coalesce(Version.failed_at, at)}
        await self.session.execute(update(Version).where(Version.id == version_id).values(**values))

    async def set_quota(self, version_id: uuid.UUID, images_quota: int) -> None:
        """Store the quota the journey computed (the journey is the source of truth).

        Quotas only grow, so the larger value wins: two add-ons recorded out of order keep the later total.
        """
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id)
            .values(images_quota=func.greatest(Version.images_quota, images_quota))
        )

    async def hide(self, version_id: uuid.UUID, at: datetime) -> None:
        """The customer asked to delete the model: from now on the API answers 410 for it."""
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id)
            .values(deleted_at=func.coalesce(Version.deleted_at, at))
        )

    async def scrub(self, version_id: uuid.UUID, at: datetime) -> None:
        """Deleted: no content is left (ids, dates and quota figures stay for the ledger)."""
        await self.session.execute(
            update(Version)
            .where(Version.id == version_id)
            .values(
                status=VersionStatus.DELETED.value,
                deleted_at=func.coalesce(Version.deleted_at, at),
                class_name="",
                training_zip_key=None,
                model_version=None,
                error=None,
            )
        )

    async def training_payments(self, payment_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these payments have a model being checked or trained (their staged photos are in use)."""
        busy = (VersionStatus.VALIDATING.value, VersionStatus.TRAINING.value)
        rows = await self.session.scalars(
            select(Version.payment_id).where(Version.payment_id.in_(payment_ids), Version.status.in_(busy))
        )
        return set(rows)

"""Deletion and retention activities: a customer's model deleted with a receipt, old things deleted daily.

Every step is safe to run twice: what is gone is not found again, and each step adds what it removed to
the receipt in the same transaction that removes the rows (objects in the bucket go first, so a retry
finds the rows again and deletes nothing twice).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.images import training_zip_key
from ecomdream.clients.storage import Storage
from ecomdream.contracts import journey_id, staging_prefix
from ecomdream.contracts.deletion import (
    Deleted,
    DeletionFinish,
    DeletionReceipt,
    DeletionStart,
    DeletionStep,
    Expiry,
)
from ecomdream.contracts.events import EventType
from ecomdream.contracts.payment import DeleteRequest, JourneyState
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.models import Deletion
from ecomdream.repositories.access import AccessRepository
from ecomdream.repositories.events import DeletionRepository, EventRepository
from ecomdream.repositories.prompts import PromptRepository
from ecomdream.repositories.versions import VersionRepository

# Rows (and their objects) deleted per transaction: bounded memory and short locks on any number.
ROWS_PER_BATCH = 500


def receipt_of(row: Deletion, model_version: str | None = None) -> DeletionReceipt:
    """The receipt a row holds."""
    return DeletionReceipt(
        receipt_id=row.receipt_id,
        version_id=row.version_id,
        payment_id=row.payment_id,
        state=row.state,
        requested_at=row.requested_at,
        completed_at=row.completed_at,
        deleted={kind: int(str(count)) for kind, count in row.deleted.items()},
        model_version=model_version,
    )


class DeletionActivities:
    """Activities that need the database, the bucket and (to stop a journey) the Temporal client."""

    def __init__(self, sessionmaker: SessionMaker, storage: Storage) -> None:
        self.sessionmaker = sessionmaker
        self.storage = storage

    @activity.defn
    async def begin_deletion(self, start: DeletionStart) -> DeletionReceipt:
        """Write the receipt (once per version) and hide the model: the API answers 410 from now on."""
        async with transaction(self.sessionmaker) as session:
            row = await DeletionRepository(session).open(
                start.receipt_id, start.version_id, start.payment_id, start.requested_at
            )
            versions = VersionRepository(session)
            await versions.hide(start.version_id, start.requested_at)
            version = await versions.get(start.version_id)
            return receipt_of(row, version.model_version if version else None)

    @activity.defn
    async def stop_journey(self, step: DeletionStep) -> str:
        """Have the model's journey stop its work and end (`delete` update); its stage at the end.

        A journey that has already ended is fine: there is nothing running to stop.
        """
        handle = activity.client().get_workflow_handle(journey_id(step.payment_id))
        try:
            state: JourneyState = await handle.execute_update(
                "delete",
                DeleteRequest(receipt_id=step.receipt_id),
                id=f"delete-{step.receipt_id}",
                result_type=JourneyState,
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return "ended"
            raise
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            raise ApplicationError(message, type="JourneyNotStopped", non_retryable=True) from err
        return state.stage.value

    async def _delete_prefix(self, step: DeletionStep, kind: Deleted, prefix: str) -> int:
        deleted = await self.storage.delete_prefix(prefix)
        if deleted:
            async with transaction(self.sessionmaker) as session:
                await DeletionRepository(session).add(step.receipt_id, {kind: deleted})
        return deleted

    @activity.defn
    async def delete_training_files(self, step: DeletionStep) -> int:
        """Delete the customer's staged photos and the training zip from the bucket."""
        photos = await self._delete_prefix(step, Deleted.PHOTOS, staging_prefix(step.payment_id))
        archive = await self._delete_prefix(step, Deleted.TRAINING_ZIP, training_zip_key(step.version_id))
        return photos + archive

    @activity.defn
    async def delete_generated(self, step: DeletionStep) -> int:
        """Delete every generated image (object, then row) in batches, then the prompts' rows."""
        images = 0
        while True:
            async with transaction(self.sessionmaker) as session:
                prompts = PromptRepository(session)
                batch = await prompts.images_of_version(step.version_id, ROWS_PER_BATCH)
                if not batch:
                    break
                await self.storage.delete_keys([key for _, key in batch])
                removed = await prompts.delete_images([image_id for image_id, _ in batch])
                await DeletionRepository(session).add(step.receipt_id, {Deleted.IMAGES: removed})
            images += removed
            activity.heartbeat(images)
        async with transaction(self.sessionmaker) as session:
            removed = await PromptRepository(session).delete_of_version(step.version_id)
            await DeletionRepository(session).add(step.receipt_id, {Deleted.PROMPTS: removed})
        return images

    @activity.defn
    async def delete_records(self, step: DeletionStep) -> None:
        """Delete the model's share links and its customer events (the deletion's own announcement stays)."""
        async with transaction(self.sessionmaker) as session:
            shares = await AccessRepository(session).delete_shares(step.version_id)
            events = await EventRepository(session).delete_of_version(
                step.version_id, keep=(EventType.VERSION_DELETED.value,)
            )
            await DeletionRepository(session).add(
                step.receipt_id, {Deleted.SHARE_LINKS: shares, Deleted.EVENTS: events}
            )

    @activity.defn
    async def finish_deletion(self, finish: DeletionFinish) -> DeletionReceipt:
        """Scrub the model's row (ids, dates and quota figures stay) and close the receipt."""
        at = datetime.now(UTC)
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).scrub(finish.version_id, at)
            receipts = DeletionRepository(session)
            await receipts.add(finish.receipt_id, finish.counts)
            await receipts.finish(finish.receipt_id, at)
            row = await receipts.get(finish.receipt_id)
            assert row is not None
            await session.refresh(row)
            return receipt_of(row)


class RetentionActivities:
    """The daily retention run's deletions (database and bucket)."""

    def __init__(self, sessionmaker: SessionMaker, storage: Storage) -> None:
        self.sessionmaker = sessionmaker
        self.storage = storage

    @activity.defn
    async def expire_images(self, expiry: Expiry) -> int:
        """Delete the objects of generated images made before `before`; their rows are marked expired."""
        expired = 0
        while True:
            async with transaction(self.sessionmaker) as session:
                prompts = PromptRepository(session)
                batch = await prompts.expiring_images(expiry.before, ROWS_PER_BATCH)
                if not batch:
                    return expired
                await self.storage.delete_keys([key for _, key in batch])
                await prompts.mark_expired([image_id for image_id, _ in batch], datetime.now(UTC))
            expired += len(batch)
            activity.heartbeat(expired)

    @activity.defn
    async def delete_failed_uploads(self, expiry: Expiry) -> int:
        """Delete staged photos older than `before` unless their payment's model is being checked or trained.

        Photos are staged only from an upload until its training ends, and every ending deletes them:
        what is left this long is from uploads that failed or journeys that ended without a model.
        """
        deleted = 0
        async for page in self.storage.pages("staging/"):
            old = {key: _payment_of(key) for key, modified in page if modified < expiry.before}
            if not old:
                continue
            async with transaction(self.sessionmaker) as session:
                payments = {p for p in old.values() if p is not None}
                busy = await VersionRepository(session).training_payments(payments)
            doomed = [key for key, payment in old.items() if payment not in busy]
            await self.storage.delete_keys(doomed)
            deleted += len(doomed)
            activity.heartbeat(deleted)
        return deleted


def _payment_of(key: str) -> uuid.UUID | None:
    """The payment a staged key belongs to (`staging/<payment>/<upload>/<n>`)."""
    try:
        return uuid.UUID(key.split("/")[1])
    except (IndexError, ValueError):
        return None

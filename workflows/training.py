"""The training steps of a journey: check photos → zip → submit → wait (webhook, polling, deadline)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.images import ImageActivities, training_zip_key
    from activities.payments import PaymentActivities
    from activities.records import RecordActivities
    from activities.replicate import ReplicateActivities
    from ecomdream.contracts import REPLICATE_TASK_QUEUE, staging_prefix
    from ecomdream.contracts.payment import RefundRequest, RefundResult
    from ecomdream.contracts.training import (
        Cleanup,
        PhotoCheck,
        TrainingCreate,
        TrainingPoll,
        TrainingStatus,
        TrainRequest,
        VersionCreate,
        VersionOutcome,
        ZipRequest,
    )
    from workflows import metrics
    from workflows.policies import (
        LEDGER_RETRY,
        LEDGER_TIMEOUT,
        REPLICATE_TIMEOUT,
        VENDOR_RETRY,
        abandon,
        polling,
    )

PHOTO_TIMEOUT = timedelta(minutes=5)
PHOTO_HEARTBEAT = timedelta(minutes=1)
# Retries of the photo check stop here, so a customer is not kept waiting for ever; the zip of photos that
# passed the check is retried until storage is back (giving up there would refund a good order).
PHOTO_GIVE_UP = timedelta(minutes=30)


async def check_photos(request: TrainRequest) -> None:
    """Raise an `InvalidPhotos` ApplicationError listing every problem, after removing the staged upload."""
    result = await workflow.execute_activity_method(
        ImageActivities.check_photos,
        PhotoCheck(photos=request.photos),
        start_to_close_timeout=PHOTO_TIMEOUT,
        schedule_to_close_timeout=PHOTO_GIVE_UP,
        heartbeat_timeout=PHOTO_HEARTBEAT,
        retry_policy=LEDGER_RETRY,
        summary=f"check {len(request.photos)} photos",
    )
    if result.problems:
        await delete(staging_prefix_of(request))
        raise ApplicationError(
            "Some images are not suitable for training",
            [p.model_dump() for p in result.problems],
            type="InvalidPhotos",
            non_retryable=True,
        )


def staging_prefix_of(request: TrainRequest) -> str:
    """The staged upload's own prefix (one payment may upload several times)."""
    return request.photos[0].key.rsplit("/", 1)[0] + "/"


async def submit(
    payment_id: uuid.UUID, version_id: uuid.UUID, request: TrainRequest, trigger: str, quota: int
) -> TrainingStatus:
    """Record the version, build the zip, create the training."""
    await workflow.execute_activity_method(
        RecordActivities.create_version,
        VersionCreate(
            version_id=version_id,
            payment_id=payment_id,
            class_name=request.class_name,
            trigger_token=trigger,
            images_count=len(request.photos),
            images_quota=quota,
        ),
        start_to_close_timeout=LEDGER_TIMEOUT,
        retry_policy=LEDGER_RETRY,
        summary="record the new model",
    )
    archive = await workflow.execute_activity_method(
        ImageActivities.build_training_zip,
        ZipRequest(version_id=version_id, photos=request.photos),
        start_to_close_timeout=PHOTO_TIMEOUT,
        heartbeat_timeout=PHOTO_HEARTBEAT,
        retry_policy=LEDGER_RETRY,
        summary=f"build the training zip of {len(request.photos)} photos",
    )
    return await workflow.execute_activity_method(
        ReplicateActivities.create_training,
        TrainingCreate(
            version_id=version_id, zip_key=archive.key, class_name=request.class_name, trigger_token=trigger
        ),
        task_queue=REPLICATE_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        retry_policy=VENDOR_RETRY,
        summary="start the training on Replicate",
    )


async def resubmit(version_id: uuid.UUID, class_name: str, trigger: str) -> TrainingStatus:
    """Train a failed model again from the zip it was trained from (operator retry)."""
    await workflow.execute_activity_method(
        RecordActivities.reopen_version,
        version_id,
        start_to_close_timeout=LEDGER_TIMEOUT,
        retry_policy=LEDGER_RETRY,
        summary="show the model as training again",
    )
    return await workflow.execute_activity_method(
        ReplicateActivities.create_training,
        TrainingCreate(
            version_id=version_id,
            zip_key=training_zip_key(version_id),
            class_name=class_name,
            trigger_token=trigger,
        ),
        task_queue=REPLICATE_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        retry_policy=VENDOR_RETRY,
        summary="start the training on Replicate again (operator retry)",
    )


async def watch(
    version_id: uuid.UUID,
    training: TrainingStatus,
    poll_every: timedelta,
    deadline: timedelta,
    webhook_result: Callable[[], TrainingStatus | None],
    cancel_reason: Callable[[], str | None],
) -> TrainingStatus:
    """The training's end: from the webhook or, if webhooks are lost, from polling; cancelled at the deadline."""
    poll = workflow.start_activity_method(
        ReplicateActivities.poll_training,
        TrainingPoll(version_id=version_id, training_id=training.training_id),
        task_queue=REPLICATE_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        schedule_to_close_timeout=deadline,
        retry_policy=polling(poll_every),
        summary="watch the training (fallback for lost webhooks)",
    )
    event = asyncio.ensure_future(
        workflow.wait_condition(lambda: webhook_result() is not None or cancel_reason() is not None)
    )
    await workflow.wait([poll, event], return_when=asyncio.FIRST_COMPLETED)
    result, reason = webhook_result(), cancel_reason()
    if result is not None:
        abandon(poll)
        return result
    abandon(event)
    if reason is not None:
        abandon(poll)
        await cancel(training.training_id)
        return TrainingStatus(
            training_id=training.training_id, status="canceled", error=f"Cancelled by operator: {reason}"
        )
    try:
        return poll.result()
    except ActivityError:
        await cancel(training.training_id)
        return TrainingStatus(
            training_id=training.training_id, status="failed", error="Training did not finish in time"
        )


async def cancel(training_id: str) -> None:
    """Cancel the training at Replicate."""
    await workflow.execute_activity_method(
        ReplicateActivities.cancel_training,
        training_id,
        task_queue=REPLICATE_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        retry_policy=VENDOR_RETRY,
        summary="cancel the training",
    )


async def record_outcome(version_id: uuid.UUID, status: TrainingStatus) -> None:
    """Store ready/failed on the version."""
    await workflow.execute_activity_method(
        RecordActivities.record_version_outcome,
        VersionOutcome(
            version_id=version_id,
            status="ready" if status.status == "succeeded" else "failed",
            model_version=status.model_version,
            error=None if status.status == "succeeded" else (status.error or f"Training {status.status}"),
        ),
        start_to_close_timeout=LEDGER_TIMEOUT,
        retry_policy=LEDGER_RETRY,
        summary="record how the training ended",
    )


async def refund(payment_id: uuid.UUID, reason: str) -> RefundResult:
    """Refund the payment (idempotent at Stripe); a refund Stripe refuses comes back with its reason."""
    metrics.refund()
    try:
        return await workflow.execute_activity_method(
            PaymentActivities.refund_payment,
            RefundRequest(payment_id=payment_id, reason=reason),
            start_to_close_timeout=REPLICATE_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="refund the payment",
        )
    except ActivityError as err:
        if isinstance(err.cause, ApplicationError) and err.cause.type == "RefundRejected":
            workflow.logger.warning("refund refused: %s", err.cause.message)
            return RefundResult(refund_id=None, amount=0, error=err.cause.message)
        raise


async def delete(*prefixes: str) -> None:
    """Delete customer photos (and zips) from the bucket."""
    await workflow.execute_activity_method(
        ImageActivities.delete_objects,
        Cleanup(prefixes=prefixes),
        start_to_close_timeout=PHOTO_TIMEOUT,
        retry_policy=LEDGER_RETRY,
        summary="delete the customer's photos",
    )


def cleanup_prefixes(payment_id: uuid.UUID, version_id: uuid.UUID, with_zip: bool) -> tuple[str, ...]:
    """What to delete once training ended."""
    prefixes = [staging_prefix(payment_id)]
    if with_zip:
        prefixes.append(training_zip_key(version_id))
    return tuple(prefixes)

"""DeletionWorkflow: a customer deletes a model; RetentionWorkflow: the daily deletion of old things."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.deletion import DeletionActivities, RetentionActivities
    from activities.replicate import ReplicateActivities
    from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE
    from ecomdream.contracts.deletion import (
        DeletionFinish,
        DeletionInput,
        DeletionReceipt,
        DeletionStart,
        DeletionStep,
        Expiry,
        ReplicateDeletion,
        RetentionInput,
        RetentionResult,
    )
    from ecomdream.contracts.events import EventType
    from ecomdream.contracts.payment import Attention, ResumeRequest
    from ecomdream.contracts.search import NEEDS_OPERATOR, PAYMENT_ID, VERSION_ID

from workflows import metrics
from workflows.escalation import Escalation
from workflows.notices import announce
from workflows.policies import LEDGER_RETRY, REPLICATE_TIMEOUT, VENDOR_RETRY

# Stopping a journey may wait for a cancel at Replicate and a refund; each attempt re-attaches to the
# same `delete` update, so a timeout only looks again.
STOP_TIMEOUT = timedelta(minutes=10)
# Deleting a model's objects and rows runs in batches that report progress.
BATCH_TIMEOUT = timedelta(hours=1)
BATCH_HEARTBEAT = timedelta(minutes=2)


@workflow.defn
class DeletionWorkflow:
    """Deletes one model and everything made for it, keeping only the ledger; leaves a receipt."""

    def __init__(self) -> None:
        self.receipt: DeletionReceipt | None = None
        self.ledger = Escalation(self)
        self.attention: Attention | None = None

    @workflow.run
    async def run(self, deletion: DeletionInput) -> DeletionReceipt:
        """Receipt → stop the journey → bucket → rows → Replicate → scrub the model and close the receipt."""
        workflow.upsert_search_attributes(
            [PAYMENT_ID.value_set(str(deletion.payment_id)), VERSION_ID.value_set(str(deletion.version_id))]
        )
        self.receipt = await self.ledger.ledger(
            DeletionActivities.begin_deletion,
            DeletionStart(
                receipt_id=workflow.uuid4(),
                version_id=deletion.version_id,
                payment_id=deletion.payment_id,
                requested_at=deletion.requested_at,
            ),
            summary="write the receipt and hide the model",
        )
        if self.receipt.state == "done":
            return self.receipt
        step = DeletionStep(
            receipt_id=self.receipt.receipt_id, version_id=deletion.version_id, payment_id=deletion.payment_id
        )
        workflow.set_current_details("Stopping the model's journey")
        await workflow.execute_activity_method(
            DeletionActivities.stop_journey,
            step,
            start_to_close_timeout=STOP_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="stop the journey (training, prompt) and end it",
        )
        workflow.set_current_details("Deleting photos, images, prompts and the trained model")
        for activity in (
            DeletionActivities.delete_training_files,
            DeletionActivities.delete_generated,
            DeletionActivities.delete_records,
        ):
            await workflow.execute_activity_method(
                activity,
                step,
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=BATCH_HEARTBEAT,
                retry_policy=LEDGER_RETRY,
            )
        at_replicate = await workflow.execute_activity_method(
            ReplicateActivities.delete_trained_model,
            ReplicateDeletion(version_id=deletion.version_id, model_version=self.receipt.model_version),
            task_queue=REPLICATE_OTHER_TASK_QUEUE,
            start_to_close_timeout=REPLICATE_TIMEOUT,
            retry_policy=VENDOR_RETRY,
            summary="delete the trained version and its model at Replicate",
        )
        self.receipt = await self.ledger.ledger(
            DeletionActivities.finish_deletion,
            DeletionFinish(receipt_id=step.receipt_id, version_id=deletion.version_id, counts=at_replicate),
            summary="scrub the model's row and close the receipt",
        )
        await announce(
            deletion.payment_id,
            deletion.version_id,
            EventType.VERSION_DELETED,
            {
                "receipt_id": str(step.receipt_id),
                "receipt_path": f"/api/v1/deletions/{step.receipt_id}",
                "deleted": dict(self.receipt.deleted),
            },
        )
        workflow.set_current_details("Deleted")
        return self.receipt

    @workflow.update
    def resume(self, request: ResumeRequest) -> None:
        """After fixing what stopped a step (`NeedsOperator=internal_error`), try the step again."""
        workflow.logger.info("operator resumed the deletion: %s", request.reason)
        self.ledger.resume()

    def flag(self, attention: Attention) -> None:
        """An operator must act (searchable as `NeedsOperator`)."""
        if self.attention is not attention:
            self.attention = attention
            metrics.operator_attention(attention.value)
            workflow.upsert_search_attributes([NEEDS_OPERATOR.value_set(attention.value)])

    def clear(self, attention: Attention) -> None:
        """The reason for `attention` is gone."""
        if self.attention is attention:
            self.attention = None
            workflow.upsert_search_attributes([NEEDS_OPERATOR.value_unset()])

    @workflow.update
    async def get_receipt(self) -> DeletionReceipt:
        """The receipt, once it is written (the API starts the workflow with this update)."""
        await workflow.wait_condition(lambda: self.receipt is not None)
        assert self.receipt is not None
        return self.receipt


@workflow.defn
class RetentionWorkflow:
    """Deletes generated images and failed uploads older than their retention (started by a schedule)."""

    @workflow.run
    async def run(self, retention: RetentionInput) -> RetentionResult:
        """Expire old generated images, then delete old staged photos nobody trains on."""
        now = workflow.now()
        images = await workflow.execute_activity_method(
            RetentionActivities.expire_images,
            Expiry(before=now - timedelta(days=retention.image_days)),
            start_to_close_timeout=BATCH_TIMEOUT,
            heartbeat_timeout=BATCH_HEARTBEAT,
            retry_policy=LEDGER_RETRY,
            summary=f"delete generated images older than {retention.image_days} days",
        )
        photos = await workflow.execute_activity_method(
            RetentionActivities.delete_failed_uploads,
            Expiry(before=now - timedelta(days=retention.failed_upload_days)),
            start_to_close_timeout=BATCH_TIMEOUT,
            heartbeat_timeout=BATCH_HEARTBEAT,
            retry_policy=LEDGER_RETRY,
            summary=f"delete failed uploads older than {retention.failed_upload_days} days",
        )
        workflow.set_current_details(f"Deleted {images} generated images and {photos} staged photos")
        return RetentionResult(images=images, staged_photos=photos)

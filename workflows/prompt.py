"""PromptWorkflow: one prompt — prediction → wait → copy images → record; a failure costs nothing."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.images import ImageActivities
    from activities.prompts import PromptActivities
    from activities.replicate import PredictionActivities
    from ecomdream.contracts import REPLICATE_OTHER_TASK_QUEUE, REPLICATE_PREDICT_TASK_QUEUE
    from ecomdream.contracts.prompt import (
        ImageCopy,
        PredictionCreate,
        PredictionEvent,
        PredictionPoll,
        PredictionStatus,
        PromptFinished,
        PromptInput,
        PromptOutcome,
        PromptStarted,
    )
    from ecomdream.contracts.training import Cleanup

from workflows import metrics
from workflows.policies import (
    LEDGER_RETRY,
    LEDGER_TIMEOUT,
    REPLICATE_TIMEOUT,
    VENDOR_RETRY,
    customer_reason,
)
from workflows.waiting import webhook_or_poll

COPY_TIMEOUT = timedelta(minutes=2)
CANCELLED = "Stopped: the model is being deleted"
# Provider downloads are retried briefly; an output that is gone or not an image will not come back.
COPY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=10,
    non_retryable_error_types=["OutputGone", "BadOutput"],
)


@workflow.defn
class PromptWorkflow:
    """Generates one prompt's images with the customer's model and stores them in our bucket."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.webhook_result: PredictionStatus | None = None
        # What a cancel (the model is being deleted) must undo: the prediction and the copied images.
        self.prediction_id: str | None = None
        self.keys: tuple[str, ...] = ()

    @workflow.run
    async def run(self, prompt: PromptInput) -> PromptOutcome:
        """Record → predict → wait → copy → record; every failure path releases the reserved images.

        Cancelled (its model is being deleted), it cancels the prediction and deletes what it copied.
        """
        try:
            return await self._generate(prompt)
        except (asyncio.CancelledError, ActivityError) as err:
            if not is_cancelled_exception(err):
                raise
            await self._undo(prompt)
            raise

    async def _generate(self, prompt: PromptInput) -> PromptOutcome:
        workflow.set_current_details(f"Generating {prompt.spec.num_outputs} image(s)")
        await workflow.execute_activity_method(
            PromptActivities.record_prompt_started,
            PromptStarted(prompt_id=prompt.prompt_id, version_id=prompt.version_id, spec=prompt.spec),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="record the prompt",
        )
        try:
            status = await self._predict(prompt)
            if status.status != "succeeded" or not status.output:
                return await self._finish(
                    prompt, status.prediction_id, error=status.error or f"Generation {status.status}"
                )
            self.keys = tuple(f"images/{workflow.uuid4().hex}" for _ in status.output)
            copied = await workflow.execute_activity_method(
                PromptActivities.copy_images,
                ImageCopy(
                    prompt_id=prompt.prompt_id,
                    version_id=prompt.version_id,
                    urls=status.output,
                    keys=self.keys,
                ),
                start_to_close_timeout=COPY_TIMEOUT,
                retry_policy=COPY_RETRY,
                # A cancel waits for the copy to end: what it wrote is then deleted, not left behind.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=f"copy {len(status.output)} image(s) to our bucket",
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            workflow.logger.warning("generation failed: %s", err.cause or err)
            return await self._finish(prompt, None, error=f"Generation failed: {customer_reason(err)}")
        await workflow.execute_activity_method(
            PromptActivities.record_prompt_finished,
            PromptFinished(
                prompt_id=prompt.prompt_id,
                version_id=prompt.version_id,
                prediction_id=status.prediction_id,
                images=tuple(copied),
                predict_time=status.predict_time,
            ),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="record the images and charge the quota",
        )
        workflow.set_current_details(f"Done — {len(copied)} image(s)")
        return PromptOutcome(prompt_id=prompt.prompt_id, status="succeeded", images=len(copied))

    @workflow.signal
    def prediction_event(self, event: PredictionEvent) -> None:
        """A verified Replicate webhook about this prompt's prediction (deduplicated by webhook id)."""
        if event.webhook_id in self.seen:
            metrics.duplicate_webhook("replicate")
            return
        self.seen.append(event.webhook_id)
        if event.prediction.finished:
            self.webhook_result = event.prediction

    async def _predict(self, prompt: PromptInput) -> PredictionStatus:
        created = await workflow.execute_activity_method(
            PredictionActivities.create_prediction,
            PredictionCreate(
                prompt_id=prompt.prompt_id, model_version=prompt.model_version, spec=prompt.spec
            ),
            task_queue=REPLICATE_PREDICT_TASK_QUEUE,
            start_to_close_timeout=REPLICATE_TIMEOUT,
            retry_policy=VENDOR_RETRY,
            summary="start the prediction on Replicate",
        )
        self.prediction_id = created.prediction_id

        def delivered() -> PredictionStatus | None:
            result = self.webhook_result
            return result if result is not None and result.prediction_id == created.prediction_id else None

        try:
            status = await webhook_or_poll(
                delivered,
                PredictionActivities.poll_prediction,
                PredictionPoll(prediction_id=created.prediction_id),
                prompt,
                what="prediction",
            )
            assert status is not None, "a prediction's wait is never interrupted"
            return status
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            metrics.deadline_missed("prediction", err)
            await _cancel_prediction(created.prediction_id)
            return PredictionStatus(
                prediction_id=created.prediction_id,
                status="failed",
                error="Generation did not finish in time",
            )

    async def _undo(self, prompt: PromptInput) -> None:
        """Cancelled: stop the prediction, delete the images copied so far, record the prompt as failed."""
        if self.prediction_id is not None:
            await _cancel_prediction(self.prediction_id)
        if self.keys:
            await workflow.execute_activity_method(
                ImageActivities.delete_objects,
                Cleanup(prefixes=self.keys),
                start_to_close_timeout=COPY_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary="delete the images copied so far",
            )
        await self._finish(prompt, self.prediction_id, error=CANCELLED)

    async def _finish(self, prompt: PromptInput, prediction_id: str | None, *, error: str) -> PromptOutcome:
        await workflow.execute_activity_method(
            PromptActivities.record_prompt_finished,
            PromptFinished(
                prompt_id=prompt.prompt_id,
                version_id=prompt.version_id,
                prediction_id=prediction_id,
                error=error,
            ),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="record the failure (no images charged)",
        )
        workflow.set_current_details(f"Failed: {error}")
        return PromptOutcome(prompt_id=prompt.prompt_id, status="failed", error=error)


async def _cancel_prediction(prediction_id: str) -> None:
    await workflow.execute_activity_method(
        PredictionActivities.cancel_prediction,
        prediction_id,
        task_queue=REPLICATE_OTHER_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        retry_policy=VENDOR_RETRY,
        summary="cancel the prediction",
    )

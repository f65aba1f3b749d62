"""The training phase of a journey: photos accepted → zip → Replicate training → ready, retried or refunded."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.images import ImageActivities, training_zip_key
    from activities.records import RecordActivities
    from activities.replicate import ReplicateActivities
    from ecomdream.contracts import (
        REPLICATE_OTHER_TASK_QUEUE,
        staging_prefix,
    )
    from ecomdream.contracts.events import EventType
    from ecomdream.contracts.payment import ENDED_STAGES, JourneyStage, RefundResult
    from ecomdream.contracts.refusals import Refusal, refuse, training_refusal
    from ecomdream.contracts.search import VERSION_ID
    from ecomdream.contracts.training import (
        Cleanup,
        PhotoCheck,
        TrainAccepted,
        TrainingCreate,
        TrainingEvent,
        TrainingPoll,
        TrainingStatus,
        TrainRequest,
        VersionCreate,
        VersionOutcome,
        ZipRequest,
    )

from workflows import metrics
from workflows.checkout import refund
from workflows.escalation import Escalation
from workflows.notices import announce
from workflows.policies import (
    LEDGER_RETRY,
    REPLICATE_TIMEOUT,
    VENDOR_RETRY,
    abandon,
    customer_reason,
    failure_type,
)
from workflows.record import JourneyRecord
from workflows.waiting import webhook_or_poll

T = TypeVar("T")

TRIGGER_TOKEN = "TOK"
PHOTO_TIMEOUT = timedelta(minutes=5)
PHOTO_HEARTBEAT = timedelta(minutes=1)
# The photo check hands the upload back to the customer after this long; the zip fails (refunded) after it.
PHOTO_GIVE_UP = timedelta(minutes=30)
ZIP_DEADLINE = timedelta(minutes=30)
PHOTOS_LOST = (
    "Some of your photos were lost before training started ({files}); please upload your photos again — "
    "your payment still covers this model"
)


class TrainingRun:
    """One journey's training: the `train` update hands it photos; `run` turns them into a model.

    Its state is the request, the lock of the photo check, the webhooks' results, an operator's retry and
    the journey's cancel (on the record); the deadline and the retry window come with the request.
    """

    def __init__(self, record: JourneyRecord, ledger: Escalation) -> None:
        self.record = record
        self.ledger = ledger
        self.request: TrainRequest | None = None
        self.checking = False
        # Ends reported by webhooks, by training id: one may arrive before the workflow has heard the
        # create's answer, and an old training's late duplicate must not end a retried one.
        self.webhook_results: dict[str, TrainingStatus] = {}
        self.retry_reason: str | None = None
        self.retried = False
        self.recorded_failure: str | None = None

    # The `train` update ------------------------------------------------------------------------------

    def refusal(self) -> None:
        """The per-payment lock: photos are taken only when paid and while no other upload is checked."""
        refusal = training_refusal(self.record.state.stage, self.checking)
        if refusal is not None:
            raise refusal

    async def accept(self, request: TrainRequest) -> TrainAccepted:
        """Check the photos (every problem at once) and record the model; the training runs in `run`."""
        self.checking = True
        self.record.enter(JourneyStage.VALIDATING)
        try:
            await self._announce(
                EventType.VERSION_VALIDATING, {"photos": len(request.photos)}, str(request.upload_id)
            )
            await _check_photos(request)
        except BaseException:
            self.record.enter(JourneyStage.PAID)
            raise
        finally:
            self.checking = False
        if self.record.cancel_reason is not None:
            await _delete(_upload_prefix(request))
            raise refuse(Refusal.CANCELLED, "This payment was cancelled and refunded")
        state = self.record.state
        version_id = state.version_id or workflow.uuid4()
        self.record.update(
            version_id=version_id, class_name=request.class_name, trigger_token=TRIGGER_TOKEN, error=None
        )
        await self.ledger.ledger(
            RecordActivities.create_version,
            VersionCreate(
                version_id=version_id,
                payment_id=state.payment_id,
                class_name=request.class_name,
                trigger_token=TRIGGER_TOKEN,
                images_count=len(request.photos),
                images_quota=state.images_quota,
            ),
            summary="record the new model",
        )
        self.request = request
        self.record.enter(JourneyStage.TRAINING, VERSION_ID.value_set(str(version_id)))
        return TrainAccepted(version_id=version_id)

    def on_webhook(self, event: TrainingEvent) -> None:
        """A verified Replicate webhook about one of this journey's trainings."""
        if event.training.finished:
            self.webhook_results[event.training.training_id] = event.training

    # The main loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """From photos to an ended training: READY, FAILED, CANCELLED or DELETED (or PAID again: photos lost)."""
        while (
            self.record.state.stage is not JourneyStage.READY and self.record.state.stage not in ENDED_STAGES
        ):
            await workflow.wait_condition(
                lambda: self.request is not None or (self._cancelled and not self.checking)
            )
            if self.request is None:
                await self._end(JourneyStage.CANCELLED, self._cancel_text(), with_zip=False)
                return
            status = await self._prepare_and_train(self.request)
            if status is not None:
                await self._settle(status)

    @property
    def _cancelled(self) -> bool:
        return self.record.cancel_reason is not None

    def _cancel_text(self) -> str:
        if self.record.deleting:
            return "Deleted by the customer"
        return f"Cancelled by operator: {self.record.cancel_reason}"

    async def _prepare_and_train(self, request: TrainRequest) -> TrainingStatus | None:
        """Zip and submit, then watch; None when the photos were lost (the customer uploads again)."""
        assert self.record.state.version_id is not None
        version_id = self.record.state.version_id
        zipping = workflow.start_activity_method(
            ImageActivities.build_training_zip,
            ZipRequest(version_id=version_id, photos=request.photos),
            start_to_close_timeout=PHOTO_TIMEOUT,
            schedule_to_close_timeout=ZIP_DEADLINE,
            heartbeat_timeout=PHOTO_HEARTBEAT,
            retry_policy=LEDGER_RETRY,
            summary=f"build the training zip of {len(request.photos)} photos",
        )
        try:
            archive = await self._unless_cancelled(zipping)
        except ActivityError as err:
            if failure_type(err) == "PhotosLost":
                await self._photos_lost(request, err)
                return None
            workflow.logger.warning("training zip not built: %s", err.cause or err)
            return _failed("The training could not be started: we could not prepare your photos")
        if archive is None:
            return _cancelled(self._cancel_text())
        return await self._submit_and_watch(archive.key)

    async def _submit_and_watch(self, zip_key: str) -> TrainingStatus:
        state = self.record.state
        assert state.version_id is not None
        assert self.request is not None
        try:
            # Not interrupted by a cancel: a training created while we look away would run unwatched.
            submitted = await workflow.execute_activity_method(
                ReplicateActivities.create_training,
                TrainingCreate(
                    version_id=state.version_id,
                    zip_key=zip_key,
                    class_name=self.request.class_name,
                    trigger_token=state.trigger_token or TRIGGER_TOKEN,
                ),
                task_queue=REPLICATE_OTHER_TASK_QUEUE,
                start_to_close_timeout=REPLICATE_TIMEOUT,
                retry_policy=VENDOR_RETRY,
                summary="start the training on Replicate",
            )
        except ActivityError as err:
            workflow.logger.warning("training not started: %s", err.cause or err)
            return _failed(f"The training could not be started: {customer_reason(err)}")
        metrics.training("started")
        self.record.update(training_id=submitted.training_id, training_started_at=workflow.now(), error=None)
        # Occurrence: the training, so that an operator's retry announces its own training.
        await self._announce(EventType.VERSION_TRAINING, {}, submitted.training_id)
        return await self._watch(submitted.training_id)

    async def _watch(self, training_id: str) -> TrainingStatus:
        """The training's end: its webhook, or polls once it is overdue; cancelled at the deadline."""
        request = self.request
        assert request is not None
        assert self.record.state.version_id is not None
        try:
            status = await webhook_or_poll(
                lambda: self.webhook_results.get(training_id),
                ReplicateActivities.poll_training,
                TrainingPoll(version_id=self.record.state.version_id, training_id=training_id),
                request,
                what="training",
                interrupted=lambda: self._cancelled,
            )
        except ActivityError as err:
            metrics.deadline_missed("training", err)
            await _cancel_at_replicate(training_id)
            return _failed("Training did not finish in time", training_id)
        if status is None:
            await _cancel_at_replicate(training_id)
            return _cancelled(self._cancel_text(), training_id)
        return status

    async def _settle(self, status: TrainingStatus) -> None:
        """Ready; or failed (an operator may retry it once first); or cancelled — each refunded."""
        started = self.record.state.training_started_at
        if started is not None:
            outcome = "succeeded" if status.status == "succeeded" else "failed"
            metrics.training(outcome, workflow.now() - started)
        if self._cancelled:
            # The operator's cancel wins, even over a training that succeeded meanwhile: it is refunded.
            await self._end(JourneyStage.CANCELLED, self._cancel_text(), with_zip=True)
            return
        if status.status == "succeeded":
            await self._ready(status)
            return
        reason = status.error or f"Training {status.status}"
        if status.status == "canceled":
            await self._end(JourneyStage.CANCELLED, reason, with_zip=True)
        elif not await self._retried(reason):
            stage = JourneyStage.CANCELLED if self._cancelled else JourneyStage.FAILED
            await self._end(stage, self._cancel_text() if self._cancelled else reason, with_zip=True)

    async def _ready(self, status: TrainingStatus) -> None:
        # Ready in the journey before the ledger says so: the API lets prompts through once the ledger says
        # ready, and from then on the journey must take them. Tidying the photos comes last.
        self.record.update(model_version=status.model_version)
        self.record.enter(JourneyStage.READY)
        await self._record_outcome(status)
        state = self.record.state
        await self._announce(
            EventType.VERSION_READY,
            {"images_quota": state.images_quota, "images_left": self.record.images_left},
        )
        await _delete(*self._prefixes(with_zip=True))

    async def _retried(self, reason: str) -> bool:
        """Before refunding a failed training, give operators a window to retry it once from the same zip."""
        assert self.request is not None
        window = timedelta(seconds=self.request.retry_window_seconds)
        if self.retried or not window:
            return False
        self.record.update(error=reason, refund_at=workflow.now() + window)
        self.record.enter(JourneyStage.AWAITING_RETRY)
        await self._record_outcome(TrainingStatus(training_id="", status="failed", error=reason))
        self.recorded_failure = reason
        try:
            await workflow.wait_condition(
                lambda: self.retry_reason is not None or self._cancelled,
                timeout=window,
                timeout_summary="wait for an operator's retry, then refund",
            )
        except TimeoutError:
            pass
        self.record.update(refund_at=None)
        if self.retry_reason is None or self._cancelled:
            return False
        self.retried = True
        self.recorded_failure = None
        self.record.update(error=None)
        await self.ledger.ledger(
            RecordActivities.reopen_version,
            self.record.state.version_id,
            summary="show the model as training",
        )
        self.record.enter(JourneyStage.TRAINING)
        await self._settle(await self._submit_and_watch(training_zip_key(self.record.state.version_id)))
        return True

    def retry(self, reason: str) -> None:
        """Operator: train again from the same photos (validated by `retry_refusal`)."""
        self.retry_reason = reason

    def retry_refusal(self) -> None:
        """Only a failed training still waiting for its refund, and only once."""
        if self.record.state.stage is not JourneyStage.AWAITING_RETRY or self.retry_reason is not None:
            raise refuse(
                Refusal.NOT_RETRYABLE,
                "Only a failed training that is still waiting for its refund can be retried, and only once",
            )

    async def _photos_lost(self, request: TrainRequest, err: ActivityError) -> None:
        """The customer's to fix: the model shows why and the journey takes a new upload."""
        cause = err.cause
        lost = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else []
        message = PHOTOS_LOST.format(files=", ".join(str(name) for name in lost) or "some files")
        await self._record_outcome(TrainingStatus(training_id="", status="failed", error=message))
        await _delete(_upload_prefix(request))
        self.request = None
        self.record.update(error=message)
        self.record.enter(JourneyStage.PAID)

    async def _end(self, stage: JourneyStage, reason: str, *, with_zip: bool) -> None:
        """The model will not be trained: say why, refund, delete the customer's photos."""
        self.record.update(error=reason)
        if self.record.state.version_id is not None and self.recorded_failure != reason:
            await self._record_outcome(TrainingStatus(training_id="", status="failed", error=reason))
        result = await refund(self.record.state.payment_id, reason)
        self.record.refunded(result)
        await _delete(*self._prefixes(with_zip=with_zip))
        self.record.enter(stage)
        await self._announce_end(stage, reason, result)

    async def _announce_end(self, stage: JourneyStage, reason: str, result: RefundResult) -> None:
        """Failed or cancelled, once the refund is settled: the customer reads the reason and the refund."""
        type_ = EventType.VERSION_FAILED if stage is JourneyStage.FAILED else EventType.VERSION_CANCELLED
        refund_state = "refunded" if result.error is None else "refund_refused"
        await self._announce(type_, {"error": reason, "refund": refund_state})

    async def _announce(self, type_: EventType, data: dict[str, object], occurrence: str = "") -> None:
        state = self.record.state
        await announce(state.payment_id, state.version_id, type_, data, occurrence=occurrence)

    async def _record_outcome(self, status: TrainingStatus) -> None:
        assert self.record.state.version_id is not None
        succeeded = status.status == "succeeded"
        await self.ledger.ledger(
            RecordActivities.record_version_outcome,
            VersionOutcome(
                version_id=self.record.state.version_id,
                status="ready" if succeeded else "failed",
                model_version=status.model_version,
                error=None if succeeded else (status.error or f"Training {status.status}"),
            ),
            summary="record how the training ended",
        )

    def _prefixes(self, *, with_zip: bool) -> tuple[str, ...]:
        prefixes = [staging_prefix(self.record.state.payment_id)]
        if with_zip and self.record.state.version_id is not None:
            prefixes.append(training_zip_key(self.record.state.version_id))
        return tuple(prefixes)

    async def _unless_cancelled(self, activity: workflow.ActivityHandle[T]) -> T | None:
        """The activity's result, or None once the journey is cancelled (the activity is cancelled too)."""
        cancel = asyncio.ensure_future(workflow.wait_condition(lambda: self._cancelled))
        await workflow.wait([activity, cancel], return_when=asyncio.FIRST_COMPLETED)
        if activity.done():
            abandon(cancel)
            return activity.result()
        activity.cancel()
        try:
            await activity
        except (ActivityError, asyncio.CancelledError):
            pass
        return None


def _failed(error: str, training_id: str = "") -> TrainingStatus:
    return TrainingStatus(training_id=training_id, status="failed", error=error)


def _cancelled(error: str, training_id: str = "") -> TrainingStatus:
    return TrainingStatus(training_id=training_id, status="canceled", error=error)


def _upload_prefix(request: TrainRequest) -> str:
    """The staged upload's own prefix (one payment may upload several times)."""
    return request.photos[0].key.rsplit("/", 1)[0] + "/"


async def _check_photos(request: TrainRequest) -> None:
    """Raise a refusal listing every problem (or saying the check gave up), after removing the upload."""
    try:
        result = await workflow.execute_activity_method(
            ImageActivities.check_photos,
            PhotoCheck(photos=request.photos),
            start_to_close_timeout=PHOTO_TIMEOUT,
            schedule_to_close_timeout=PHOTO_GIVE_UP,
            heartbeat_timeout=PHOTO_HEARTBEAT,
            retry_policy=LEDGER_RETRY,
            summary=f"check {len(request.photos)} photos",
        )
    except ActivityError as err:
        # The check itself kept failing: the customer may try again, nothing was charged or started.
        workflow.logger.warning("photo check gave up: %s", err.cause or err)
        await _delete(_upload_prefix(request))
        raise refuse(
            Refusal.PHOTOS_UNCHECKED,
            "We could not check your photos right now; please upload them again in a few minutes",
        ) from err
    if result.problems:
        await _delete(_upload_prefix(request))
        raise refuse(
            Refusal.INVALID_PHOTOS,
            "Some images are not suitable for training",
            [p.model_dump() for p in result.problems],
        )


async def _cancel_at_replicate(training_id: str) -> None:
    await workflow.execute_activity_method(
        ReplicateActivities.cancel_training,
        training_id,
        task_queue=REPLICATE_OTHER_TASK_QUEUE,
        start_to_close_timeout=REPLICATE_TIMEOUT,
        retry_policy=VENDOR_RETRY,
        summary="cancel the training",
    )


async def _delete(*prefixes: str) -> None:
    """Delete customer photos (and zips) from the bucket."""
    await workflow.execute_activity_method(
        ImageActivities.delete_objects,
        Cleanup(prefixes=prefixes),
        start_to_close_timeout=PHOTO_TIMEOUT,
        retry_policy=LEDGER_RETRY,
        summary="delete the customer's photos",
    )

"""JourneyWorkflow: one paid plan from checkout to a trained model serving prompts."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts.payment import (
        AddonGrant,
        JourneyInput,
        JourneyStage,
        JourneyState,
        PaymentEvent,
        PaymentUpdate,
        QuotaUpdate,
    )
    from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME, VERSION_ID
    from ecomdream.contracts.training import TrainAccepted, TrainingEvent, TrainingStatus, TrainRequest
    from workflows import training
    from workflows.checkout import Checkout

LEDGER_TIMEOUT = timedelta(seconds=30)
LEDGER_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
ENDED = {JourneyStage.EXPIRED, JourneyStage.PAYMENT_FAILED, JourneyStage.FAILED}
TRIGGER_TOKEN = "TOK"

DETAILS = {
    JourneyStage.AWAITING_PAYMENT: "Waiting for the customer to pay at checkout",
    JourneyStage.PAID: "Paid — waiting for the customer's photos",
    JourneyStage.VALIDATING: "Checking the customer's photos and building the training set",
    JourneyStage.TRAINING: "Training on Replicate",
    JourneyStage.EXPIRED: "Checkout expired without payment",
    JourneyStage.PAYMENT_FAILED: "Payment failed at Stripe",
}


@workflow.defn
class JourneyWorkflow:
    """A customer's journey: pay → train → generate — one per initial payment."""

    @workflow.init
    def __init__(self, journey: JourneyInput) -> None:
        self.state = journey.state or JourneyState(payment_id=journey.payment_id, plan=journey.plan)
        self.checkout = Checkout(journey.pay_by, self.state.seen_events)
        if self.state.stage is not JourneyStage.AWAITING_PAYMENT:
            self.checkout.outcome = self.state.stage
        self.busy = False
        self.request: TrainRequest | None = None
        self.training_result: TrainingStatus | None = None

    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        """Wait for payment, then for photos, then for the trained model."""
        workflow.upsert_search_attributes(
            [PAYMENT_ID.value_set(str(journey.payment_id)), PLAN_NAME.value_set(journey.plan.plan_name)]
        )
        self._set_stage(self.state.stage)
        if self.state.stage is JourneyStage.AWAITING_PAYMENT:
            outcome = await self.checkout.wait()
            await self._record_payment(outcome)
            self._set_stage(outcome)
        await workflow.wait_condition(
            lambda: self.state.stage in ENDED or self.state.stage is JourneyStage.TRAINING
        )
        if self.state.stage is JourneyStage.TRAINING:
            await self._finish_training()
        if self.state.stage not in ENDED:
            await workflow.wait_condition(lambda: self.state.stage in ENDED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._snapshot()

    @workflow.update
    async def train(self, request: TrainRequest) -> TrainAccepted:
        """Check the staged photos and submit the training; returns as soon as Replicate has it."""
        self.busy = True
        try:
            self._set_stage(JourneyStage.VALIDATING)
            try:
                await training.check_photos(request)
            except ApplicationError:
                self._set_stage(JourneyStage.PAID)
                raise
            version_id = workflow.uuid4()
            self.state = self.state.model_copy(update={"version_id": version_id})
            workflow.upsert_search_attributes([VERSION_ID.value_set(str(version_id))])
            try:
                submitted = await training.submit(
                    self.state.payment_id, version_id, request, TRIGGER_TOKEN, self.state.images_quota
                )
            except ActivityError as err:
                await self._fail(f"The training could not be started: {err.cause or err}", with_zip=True)
                raise ApplicationError(
                    "We could not start the training; your payment has been refunded",
                    type="TrainingNotStarted",
                ) from err
            self.request = request
            self.state = self.state.model_copy(update={"training_id": submitted.training_id})
            self._set_stage(JourneyStage.TRAINING)
            return TrainAccepted(version_id=version_id)
        finally:
            self.busy = False

    @train.validator
    def validate_train(self, request: TrainRequest) -> None:
        """The per-payment lock: one training per paid journey, one upload at a time."""
        if self.state.stage in (
            JourneyStage.AWAITING_PAYMENT,
            JourneyStage.EXPIRED,
            JourneyStage.PAYMENT_FAILED,
        ):
            raise ApplicationError("You must pay to train model", type="NotPaid")
        if self.busy:
            raise ApplicationError("Your photos are already being processed, please wait", type="Busy")
        if self.state.stage is not JourneyStage.PAID:
            raise ApplicationError("You already have a model for this payment", type="AlreadyTraining")

    @workflow.signal
    def training_event(self, event: TrainingEvent) -> None:
        """A verified Replicate webhook about this journey's training (deduplicated by webhook id)."""
        if event.webhook_id in self.state.seen_webhooks:
            return
        self.state = self.state.model_copy(
            update={"seen_webhooks": (*self.state.seen_webhooks, event.webhook_id)}
        )
        if event.training.finished and self.state.training_id in (None, event.training.training_id):
            self.training_result = event.training

    @workflow.signal
    def payment_event(self, event: PaymentEvent) -> None:
        """A verified Stripe event about this payment (duplicates and late events are ignored)."""
        self.checkout.apply(event)

    @workflow.signal
    async def add_images(self, grant: AddonGrant) -> None:
        """A paid add-on pack: adds its images to the quota exactly once per add-on payment."""
        if grant.addon_payment_id in self.state.applied_addons:
            return
        self.state = self.state.model_copy(
            update={
                "images_quota": self.state.images_quota + grant.images,
                "applied_addons": (*self.state.applied_addons, grant.addon_payment_id),
            }
        )
        if self.state.version_id is not None:
            await workflow.execute_activity_method(
                PaymentActivities.record_quota,
                QuotaUpdate(
                    version_id=self.state.version_id,
                    images_quota=self.state.images_quota,
                    addon_payment_id=grant.addon_payment_id,
                ),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary=f"add {grant.images} images to the quota",
            )

    @workflow.query
    def get_state(self) -> JourneyState:
        """Where the journey is now."""
        return self._snapshot()

    async def _finish_training(self) -> None:
        assert self.request is not None
        assert self.state.version_id is not None
        assert self.state.training_id is not None
        status = await training.watch(
            self.state.version_id,
            TrainingStatus(training_id=self.state.training_id, status="starting"),
            timedelta(seconds=self.request.poll_seconds),
            timedelta(seconds=self.request.deadline_seconds),
            lambda: self.training_result,
        )
        await training.record_outcome(self.state.version_id, status)
        if status.status != "succeeded":
            await self._fail(status.error or f"Training {status.status}", with_zip=True, recorded=True)
            return
        await training.delete(*training.cleanup_prefixes(self.state.payment_id, self.state.version_id, False))
        self._set_stage(JourneyStage.READY)

    async def _fail(self, reason: str, *, with_zip: bool, recorded: bool = False) -> None:
        """The model cannot be trained: mark it failed, refund, delete the customer's photos."""
        version_id = self.state.version_id
        assert version_id is not None
        self.state = self.state.model_copy(update={"error": reason})
        if not recorded:
            await training.record_outcome(
                version_id, TrainingStatus(training_id="", status="failed", error=reason)
            )
        await training.refund(self.state.payment_id, reason)
        await training.delete(*training.cleanup_prefixes(self.state.payment_id, version_id, with_zip))
        self._set_stage(JourneyStage.FAILED)

    def _snapshot(self) -> JourneyState:
        return self.state.model_copy(update={"seen_events": tuple(self.checkout.seen)})

    def _details(self, stage: JourneyStage) -> str:
        if stage is JourneyStage.READY:
            left = self.state.images_quota - self.state.images_generated
            return f"Ready — {left} of {self.state.images_quota} images left"
        if stage is JourneyStage.FAILED:
            return f"Failed: {self.state.error}; refunded"
        return DETAILS.get(stage, stage.value)

    def _set_stage(self, stage: JourneyStage) -> None:
        if stage is JourneyStage.PAID and self.state.images_quota == 0:
            self.state = self.state.model_copy(update={"images_quota": self.state.plan.images})
        self.state = self.state.model_copy(update={"stage": stage})
        workflow.upsert_search_attributes([JOURNEY_STAGE.value_set(stage.value)])
        workflow.set_current_details(self._details(stage))

    async def _record_payment(self, outcome: JourneyStage) -> None:
        status = {JourneyStage.PAID: "paid", JourneyStage.PAYMENT_FAILED: "failed"}.get(outcome, "expired")
        await workflow.execute_activity_method(
            PaymentActivities.set_payment_status,
            PaymentUpdate(payment_id=self.state.payment_id, status=status, at=workflow.now()),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary=f"record payment {status}",
        )

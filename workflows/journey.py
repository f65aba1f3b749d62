"""JourneyWorkflow: one paid plan from checkout to a trained model serving prompts."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts.events import EventType
    from ecomdream.contracts.payment import (
        ENDED_STAGES,
        UNPAID_STAGES,
        AddonApplied,
        AddonGrant,
        CancelRequest,
        CheckoutOpen,
        CheckoutOpened,
        CheckoutOutcome,
        DeleteRequest,
        GrantRecord,
        GrantRequest,
        JourneyInput,
        JourneyStage,
        JourneyState,
        OperatorRefund,
        PaymentEvent,
        PaymentUpdate,
        QuotaUpdate,
        RefundResult,
        ResumeRequest,
        RetryRequest,
    )
    from ecomdream.contracts.prompt import PromptOutcome, PromptRequest
    from ecomdream.contracts.refusals import Refusal, refuse
    from ecomdream.contracts.search import PAYMENT_ID, PLAN_NAME, VERSION_ID
    from ecomdream.contracts.training import TrainAccepted, TrainingEvent, TrainRequest

from workflows import metrics
from workflows.checkout import Checkout
from workflows.checkout import refund as refund_payment
from workflows.desk import PromptDesk
from workflows.escalation import Escalation
from workflows.notices import announce
from workflows.record import JourneyRecord
from workflows.training import TrainingRun

STAGE_OF = {
    CheckoutOutcome.PAID: JourneyStage.PAID,
    CheckoutOutcome.EXPIRED: JourneyStage.EXPIRED,
    CheckoutOutcome.PAYMENT_FAILED: JourneyStage.PAYMENT_FAILED,
    CheckoutOutcome.CHECKOUT_FAILED: JourneyStage.CHECKOUT_FAILED,
    CheckoutOutcome.CANCELLED: JourneyStage.CANCELLED,
}
# Operators may cancel a journey until it has a model (after that: refund).
CANCELLABLE = frozenset(
    {
        JourneyStage.AWAITING_PAYMENT,
        JourneyStage.PAID,
        JourneyStage.VALIDATING,
        JourneyStage.TRAINING,
        JourneyStage.AWAITING_RETRY,
        JourneyStage.CANCELLING,
    }
)


@workflow.defn
class JourneyWorkflow:
    """A customer's journey: checkout → training → prompt desk; one per initial payment."""

    @workflow.init
    def __init__(self, journey: JourneyInput) -> None:
        state = journey.state or JourneyState(payment_id=journey.payment_id, plan=journey.plan)
        self.journey = journey
        self.record = JourneyRecord(state)
        self.ledger = Escalation(self.record)
        self.checkout = Checkout(
            journey.payment_id,
            journey.pay_by,
            state.seen_events,
            state.checkout,
            cancelled=lambda: self.record.cancel_reason is not None,
        )
        self.training = TrainingRun(self.record, self.ledger)
        self.desk = PromptDesk(self.record, journey.prompts_per_run)

    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        """Checkout, then training, then the prompt desk for months (a fresh run at ready and every so often)."""
        self._show_start(journey)
        if self.record.state.stage is JourneyStage.AWAITING_PAYMENT:
            await self._settle_checkout()
        # An operator's cancel (or the customer's deletion) may arrive while the payment is announced: the
        # training phase ends such a journey too.
        if self.record.state.stage in (JourneyStage.PAID, JourneyStage.CANCELLING):
            await self.training.run()
        if self.record.state.stage is JourneyStage.READY:
            if journey.state is None or journey.state.stage is not JourneyStage.READY:
                # The model is ready: what led here is never replayed again.
                await self._continue_as_new()
            await self.desk.until_fresh_run_is_due(stop=lambda: self.record.deleting)
            await self._continue_as_new()
            # Only a deletion ends a ready journey.
            await self.desk.stop()
            self.record.enter(JourneyStage.DELETED)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._snapshot()

    # Customer -----------------------------------------------------------------------------------------

    @workflow.update
    async def open_checkout(self, request: CheckoutOpen) -> CheckoutOpened:
        """Open the Stripe checkout (sent with the workflow's start); a repeat returns the first answer."""
        opened = await self.checkout.open(request)
        self.record.update(checkout=opened)
        return opened

    @open_checkout.validator
    def validate_open_checkout(self, request: CheckoutOpen) -> None:
        """One checkout per journey."""
        self.checkout.refusal_to_open()

    @workflow.signal
    def payment_event(self, event: PaymentEvent) -> None:
        """A verified Stripe event about this payment (duplicates are ignored; late money is never lost)."""
        if event.event_id in self.checkout.seen:
            metrics.duplicate_webhook("stripe")
        self.checkout.apply(event)

    @workflow.update
    async def train(self, request: TrainRequest) -> TrainAccepted:
        """Check the photos and record the model; answers before the zip and the submission (main loop)."""
        return await self.training.accept(request)

    @train.validator
    def validate_train(self, request: TrainRequest) -> None:
        """The per-payment lock: one training per paid journey, one upload at a time."""
        self.training.refusal()

    @workflow.signal
    def training_event(self, event: TrainingEvent) -> None:
        """A verified Replicate webhook about this journey's training (deduplicated by webhook id)."""
        if event.webhook_id in self.record.state.seen_webhooks:
            metrics.duplicate_webhook("replicate")
            return
        self.record.update(seen_webhooks=(*self.record.state.seen_webhooks, event.webhook_id))
        self.training.on_webhook(event)

    @workflow.update
    async def create_prompt(self, request: PromptRequest) -> PromptOutcome:
        """Generate images in a child workflow; only images actually delivered are charged."""
        return await self.desk.serve(request)

    @create_prompt.validator
    def validate_prompt(self, request: PromptRequest) -> None:
        """One prompt at a time, never past the quota."""
        self.desk.refusal(request)

    @workflow.update
    async def add_images(self, grant: AddonGrant) -> AddonApplied:
        """A paid add-on pack (from its AddonWorkflow): its images join the quota once per add-on payment."""
        state = self.record.state
        assert state.version_id is not None, "add-ons are validated to reach ready journeys only"
        if grant.addon_payment_id not in state.applied_addons:
            self.record.update(
                images_quota=state.images_quota + grant.images,
                applied_addons=(*state.applied_addons, grant.addon_payment_id),
            )
            await self.ledger.ledger(
                PaymentActivities.record_quota,
                QuotaUpdate(version_id=state.version_id, images_quota=self.record.state.images_quota),
                summary=f"add {grant.images} images to the quota",
            )
            await announce(
                state.payment_id,
                state.version_id,
                EventType.ADDON_APPLIED,
                {
                    "addon_payment_id": str(grant.addon_payment_id),
                    "images_added": grant.images,
                    "images_quota": self.record.state.images_quota,
                    "images_left": self.record.images_left,
                },
                occurrence=str(grant.addon_payment_id),
            )
        return AddonApplied(images_quota=self.record.state.images_quota)

    @add_images.validator
    def validate_add_images(self, grant: AddonGrant) -> None:
        """Only a model that serves prompts takes add-ons (the add-on is refunded otherwise)."""
        if self.record.state.stage is not JourneyStage.READY:
            raise refuse(Refusal.JOURNEY_ENDED, "This model can no longer use extra images")

    @workflow.update
    async def delete(self, request: DeleteRequest) -> JourneyState:
        """The customer deletes the model (sent by its DeletionWorkflow): stop the work and end `deleted`.

        A running training is cancelled at Replicate and a prompt being generated is cancelled; a model
        that was not ready yet is refunded like a cancel; a ready one (delivered) is not.
        """
        workflow.logger.info("the customer deletes the model (receipt %s)", request.receipt_id)
        self.record.delete()
        if self.record.state.stage not in (JourneyStage.READY, *ENDED_STAGES):
            self.record.enter(JourneyStage.CANCELLING)
        await workflow.wait_condition(lambda: self.record.state.stage in ENDED_STAGES)
        return self._snapshot()

    # Operators ----------------------------------------------------------------------------------------

    @workflow.update
    async def cancel(self, request: CancelRequest) -> JourneyState:
        """Stop the journey: an open checkout is closed, running work is stopped, the payment refunded."""
        self.record.cancel_reason = self.record.cancel_reason or request.reason
        if self.record.state.stage is not JourneyStage.AWAITING_PAYMENT:
            self.record.enter(JourneyStage.CANCELLING)
        await workflow.wait_condition(lambda: self.record.state.stage in ENDED_STAGES)
        return self._snapshot()

    @cancel.validator
    def validate_cancel(self, request: CancelRequest) -> None:
        """Only journeys that have not ended or delivered a model can be cancelled."""
        stage = self.record.state.stage
        if stage is JourneyStage.READY:
            raise refuse(Refusal.MODEL_READY, "The model is ready; use the refund update instead")
        if stage not in CANCELLABLE:
            raise refuse(Refusal.JOURNEY_ENDED, f"The journey has already ended ({stage.value})")

    @workflow.update
    async def retry_training(self, request: RetryRequest) -> JourneyState:
        """Train a failed model again from the same photos, once, before it is refunded."""
        workflow.logger.info("operator retry of the training: %s", request.reason)
        self.training.retry(request.reason)
        await workflow.wait_condition(lambda: self.record.state.stage is not JourneyStage.AWAITING_RETRY)
        return self._snapshot()

    @retry_training.validator
    def validate_retry(self, request: RetryRequest) -> None:
        """Only a failed training still waiting for its refund, and only once."""
        self.training.retry_refusal()

    @workflow.update
    async def refund(self, request: OperatorRefund) -> RefundResult:
        """Refund the payment now (once; a second refund returns the first)."""
        reason = f"Refunded by operator: {request.reason}"
        return self.record.refunded(await refund_payment(self.record.state.payment_id, reason))

    @refund.validator
    def validate_refund(self, request: OperatorRefund) -> None:
        """There must be a payment to refund."""
        if self.record.state.stage in UNPAID_STAGES:
            raise refuse(Refusal.NOT_PAID, "Nothing was paid for this journey")

    @workflow.update
    async def grant_images(self, grant: GrantRequest) -> JourneyState:
        """Add images to the quota; written to the ledger once per grant id."""
        state = self.record.state
        if grant.grant_id not in state.applied_grants:
            self.record.update(
                images_quota=state.images_quota + grant.images,
                applied_grants=(*state.applied_grants, grant.grant_id),
            )
            await self.ledger.ledger(
                PaymentActivities.record_grant,
                GrantRecord(
                    grant_id=grant.grant_id,
                    payment_id=state.payment_id,
                    version_id=state.version_id,
                    images=grant.images,
                    images_quota=self.record.state.images_quota,
                    reason=grant.reason,
                ),
                summary=f"grant {grant.images} images",
            )
        return self._snapshot()

    @grant_images.validator
    def validate_grant(self, grant: GrantRequest) -> None:
        """Only paid journeys that have not ended get extra images."""
        if self.record.state.stage in (*ENDED_STAGES, *UNPAID_STAGES):
            raise refuse(Refusal.NOT_ACTIVE, "Only a paid, active journey can get extra images")

    @workflow.update
    def resume(self, request: ResumeRequest) -> JourneyState:
        """After fixing what stopped a step (`NeedsOperator=internal_error`), try the step again."""
        workflow.logger.info("operator resumed the journey: %s", request.reason)
        self.ledger.resume()
        return self._snapshot()

    @resume.validator
    def validate_resume(self, request: ResumeRequest) -> None:
        """Only a journey whose step waits for an operator."""
        if not self.ledger.waiting_for_operator:
            raise refuse(Refusal.NOTHING_TO_RESUME, "No step of this journey is waiting for an operator")

    @workflow.query
    def get_state(self) -> JourneyState:
        """Where the journey is now."""
        return self._snapshot()

    # Steps --------------------------------------------------------------------------------------------

    def _show_start(self, journey: JourneyInput) -> None:
        version = self.record.state.version_id
        self.record.enter(
            self.record.state.stage,
            PAYMENT_ID.value_set(str(journey.payment_id)),
            PLAN_NAME.value_set(journey.plan.plan_name),
            *([VERSION_ID.value_set(str(version))] if version is not None else []),
        )
        if journey.state is None:
            metrics.journey_stage(self.record.state.stage.value)

    async def _settle_checkout(self) -> None:
        """Wait for the checkout and record how it ended; money that arrives meanwhile wins over expiry."""
        while True:
            outcome = await self.checkout.wait()
            await self.ledger.ledger(
                PaymentActivities.set_payment_status,
                PaymentUpdate(
                    payment_id=self.record.state.payment_id, status=outcome.ledger_status, at=workflow.now()
                ),
                summary=f"record payment {outcome.ledger_status}",
            )
            if self.checkout.outcome is outcome:
                break
        metrics.payment("plan", outcome.value)
        if outcome is CheckoutOutcome.PAID:
            self.record.update(images_quota=self.record.state.images_quota or self.record.state.plan.images)
        if outcome is CheckoutOutcome.CANCELLED:
            self.record.update(error=f"Cancelled by operator: {self.record.cancel_reason}")
        self.record.enter(STAGE_OF[outcome])
        if outcome is CheckoutOutcome.PAID:
            state = self.record.state
            await announce(
                state.payment_id,
                None,
                EventType.PAYMENT_PAID,
                {"plan": state.plan.plan_name, "images_quota": state.images_quota},
            )

    async def _continue_as_new(self) -> None:
        """Continue as a new run once the desk is idle; not when the model is being deleted (returns)."""
        await workflow.wait_condition(
            lambda: self.record.deleting or (not self.desk.busy and workflow.all_handlers_finished())
        )
        if self.record.deleting:
            return
        snapshot = self._snapshot().model_copy(update={"runs": self.record.state.runs + 1})
        workflow.continue_as_new(self.journey.model_copy(update={"state": snapshot}))

    def _snapshot(self) -> JourneyState:
        return self.record.state.model_copy(update={"seen_events": tuple(self.checkout.seen)})

"""JourneyWorkflow: one paid plan from checkout to a trained model serving prompts."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts import prompt_workflow_id, staging_prefix
    from ecomdream.contracts.payment import (
        AddonGrant,
        CancelRequest,
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
        RetryRequest,
    )
    from ecomdream.contracts.prompt import PromptInput, PromptOutcome, PromptRequest
    from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME, VERSION_ID
    from ecomdream.contracts.training import TrainAccepted, TrainingEvent, TrainingStatus, TrainRequest
    from workflows import metrics, training
    from workflows.checkout import Checkout
    from workflows.policies import LEDGER_RETRY, LEDGER_TIMEOUT, customer_reason
    from workflows.prompt import PromptWorkflow

ENDED = {JourneyStage.EXPIRED, JourneyStage.PAYMENT_FAILED, JourneyStage.FAILED}
TRIGGER_TOKEN = "TOK"
# Patch ids (kept while histories recorded before the change may still replay).
READY_BEFORE_CLEANUP = "ready-before-cleanup"

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
        self.journey = journey
        self.busy = False
        self.prompting = False
        self.served_this_run = 0
        self.request: TrainRequest | None = None
        self.training_started = workflow.now()
        self.cancel_reason: str | None = None
        self.training_result: TrainingStatus | None = None
        # A failed training waits for an operator's retry (once) before the refund.
        self.holding = False
        self.retry_reason: str | None = None
        self.retry_settled = False

    @workflow.run
    async def run(self, journey: JourneyInput) -> JourneyState:
        """Wait for payment, then for photos, then for the trained model; then serve prompts for months."""
        workflow.upsert_search_attributes(
            [PAYMENT_ID.value_set(str(journey.payment_id)), PLAN_NAME.value_set(journey.plan.plan_name)]
        )
        if self.state.version_id is not None:
            workflow.upsert_search_attributes([VERSION_ID.value_set(str(self.state.version_id))])
        if journey.state is None:
            metrics.journey_stage(self.state.stage.value)
        self._set_stage(self.state.stage)
        if self.state.stage is JourneyStage.AWAITING_PAYMENT:
            outcome = await self.checkout.wait()
            await self._record_payment(outcome)
            self._set_stage(outcome)
        await workflow.wait_condition(
            lambda: self.state.stage in (*ENDED, JourneyStage.TRAINING, JourneyStage.READY)
        )
        if self.state.stage is JourneyStage.TRAINING:
            await self._finish_training()
        if self.state.stage is JourneyStage.READY:
            await self._serve_until_continue_as_new()
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
            except ActivityError as err:
                # The check itself kept failing: the customer may try again, nothing was charged or started.
                workflow.logger.warning("photo check gave up: %s", err.cause or err)
                await training.delete(training.staging_prefix_of(request))
                self._set_stage(JourneyStage.PAID)
                raise ApplicationError(
                    "We could not check your photos right now; please upload them again in a few minutes",
                    type="PhotosUnchecked",
                    non_retryable=True,
                ) from err
            version_id = workflow.uuid4()
            self.state = self.state.model_copy(
                update={
                    "version_id": version_id,
                    "class_name": request.class_name,
                    "trigger_token": TRIGGER_TOKEN,
                }
            )
            workflow.upsert_search_attributes([VERSION_ID.value_set(str(version_id))])
            try:
                submitted = await training.submit(
                    self.state.payment_id, version_id, request, TRIGGER_TOKEN, self.state.images_quota
                )
            except ActivityError as err:
                workflow.logger.warning("training not started: %s", err.cause or err)
                await self._fail(f"The training could not be started: {customer_reason(err)}", with_zip=True)
                raise ApplicationError(
                    "We could not start the training; your payment has been refunded",
                    type="TrainingNotStarted",
                ) from err
            self.request = request
            self.training_started = workflow.now()
            metrics.training("started")
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

    @workflow.update
    async def create_prompt(self, request: PromptRequest) -> PromptOutcome:
        """Generate images in a child workflow; only images actually delivered are charged to the quota."""
        self.prompting = True
        try:
            assert self.state.version_id is not None
            assert self.state.model_version is not None
            workflow.set_current_details(
                f"{self._details(JourneyStage.READY)}; generating {request.spec.num_outputs}"
            )
            outcome = await workflow.execute_child_workflow(
                PromptWorkflow.run,
                PromptInput(
                    prompt_id=request.prompt_id,
                    version_id=self.state.version_id,
                    model_version=self.state.model_version,
                    spec=request.spec,
                    poll_seconds=request.poll_seconds,
                    deadline_seconds=request.deadline_seconds,
                ),
                id=prompt_workflow_id(request.prompt_id),
                # The journey may continue-as-new; a running prompt must not be terminated with the old run.
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"{request.spec.num_outputs} image(s) for version {self.state.version_id}",
            )
            metrics.prompt(outcome.status, outcome.images)
            self.served_this_run += 1
            self.state = self.state.model_copy(
                update={
                    "images_generated": self.state.images_generated + outcome.images,
                    "prompts_served": self.state.prompts_served + 1,
                }
            )
            return outcome
        finally:
            self.prompting = False
            workflow.set_current_details(self._details(self.state.stage))

    @create_prompt.validator
    def validate_prompt(self, request: PromptRequest) -> None:
        """The per-version lock and the quota: one prompt at a time, never more images than are left."""
        if self.state.stage is JourneyStage.FAILED:
            raise ApplicationError(
                "This model failed to train and cannot generate images", type="ModelFailed"
            )
        if self.state.stage is not JourneyStage.READY:
            raise ApplicationError("Please wait for your model to be ready", type="NotReady")
        if self.prompting:
            raise ApplicationError("Another prompt for this model is still running, please wait", type="Busy")
        left = self.state.images_quota - self.state.images_generated
        if left <= 0:
            raise ApplicationError(
                "You ran out of images, you need to purchase extra package to continue working",
                type="QuotaExhausted",
            )
        if left < request.spec.num_outputs:
            raise ApplicationError(f"You can only generate {left} images", type="QuotaExceeded")

    @workflow.signal
    def training_event(self, event: TrainingEvent) -> None:
        """A verified Replicate webhook about this journey's training (deduplicated by webhook id)."""
        if event.webhook_id in self.state.seen_webhooks:
            metrics.duplicate_webhook("replicate")
            return
        self.state = self.state.model_copy(
            update={"seen_webhooks": (*self.state.seen_webhooks, event.webhook_id)}
        )
        if event.training.finished and self.state.training_id in (None, event.training.training_id):
            self.training_result = event.training

    @workflow.signal
    def payment_event(self, event: PaymentEvent) -> None:
        """A verified Stripe event about this payment (duplicates and late events are ignored)."""
        if event.event_id in self.checkout.seen:
            metrics.duplicate_webhook("stripe")
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

    @workflow.update
    async def cancel(self, request: CancelRequest) -> JourneyState:
        """Operator: stop the journey; an open checkout is closed, a running training cancelled and refunded."""
        reason = f"Cancelled by operator: {request.reason}"
        if self.state.stage is JourneyStage.AWAITING_PAYMENT:
            if not await self._expire_checkout():
                raise ApplicationError("The customer has just paid; cancel again to refund", type="JustPaid")
            self.checkout.outcome = self.checkout.outcome or JourneyStage.EXPIRED
        elif self.state.stage is JourneyStage.TRAINING or self.holding:
            self.cancel_reason = request.reason
        else:
            self.busy = True
            try:
                self.state = self.state.model_copy(update={"error": reason})
                self._refunded(await training.refund(self.state.payment_id, reason))
                await training.delete(staging_prefix(self.state.payment_id))
                self._set_stage(JourneyStage.FAILED)
            finally:
                self.busy = False
        await workflow.wait_condition(lambda: self.state.stage in ENDED and not self.holding)
        return self._snapshot()

    @cancel.validator
    def validate_cancel(self, request: CancelRequest) -> None:
        """Only journeys that have not ended or delivered a model can be cancelled."""
        if self.state.stage in ENDED and not self.holding:
            raise ApplicationError(f"The journey has already ended ({self.state.stage.value})", type="Ended")
        if self.busy or self.state.stage is JourneyStage.VALIDATING:
            raise ApplicationError("Photos are being processed; try again in a minute", type="Busy")
        if self.state.stage is JourneyStage.READY:
            raise ApplicationError("The model is ready; use the refund update instead", type="Ready")

    @workflow.update
    async def retry_training(self, request: RetryRequest) -> JourneyState:
        """Operator: train a failed model again from the same photos, once, before it is refunded."""
        workflow.logger.info("operator retry of the training: %s", request.reason)
        self.retry_reason = request.reason
        await workflow.wait_condition(lambda: self.retry_settled)
        return self._snapshot()

    @retry_training.validator
    def validate_retry(self, request: RetryRequest) -> None:
        """Only a failed training still waiting for its refund, and only once."""
        if not self.holding or self.retry_reason is not None:
            raise ApplicationError(
                "Only a failed training that is still waiting for its refund can be retried, and only once",
                type="NotRetryable",
            )

    @workflow.update
    async def refund(self, request: OperatorRefund) -> RefundResult:
        """Operator: refund the payment now (once; a second refund returns the first)."""
        return self._refunded(
            await training.refund(self.state.payment_id, f"Refunded by operator: {request.reason}")
        )

    @refund.validator
    def validate_refund(self, request: OperatorRefund) -> None:
        """There must be a payment to refund."""
        if self.state.stage in (
            JourneyStage.AWAITING_PAYMENT,
            JourneyStage.EXPIRED,
            JourneyStage.PAYMENT_FAILED,
        ):
            raise ApplicationError("Nothing was paid for this journey", type="NotPaid")

    @workflow.update
    async def grant_images(self, grant: GrantRequest) -> JourneyState:
        """Operator: add images to the quota; written to the ledger once per grant id."""
        if grant.grant_id not in self.state.applied_grants:
            self.state = self.state.model_copy(
                update={
                    "images_quota": self.state.images_quota + grant.images,
                    "applied_grants": (*self.state.applied_grants, grant.grant_id),
                }
            )
            await workflow.execute_activity_method(
                PaymentActivities.record_grant,
                GrantRecord(
                    grant_id=grant.grant_id,
                    payment_id=self.state.payment_id,
                    version_id=self.state.version_id,
                    images=grant.images,
                    images_quota=self.state.images_quota,
                    reason=grant.reason,
                ),
                start_to_close_timeout=LEDGER_TIMEOUT,
                retry_policy=LEDGER_RETRY,
                summary=f"grant {grant.images} images",
            )
            workflow.set_current_details(self._details(self.state.stage))
        return self._snapshot()

    @grant_images.validator
    def validate_grant(self, grant: GrantRequest) -> None:
        """Only paid journeys that have not ended get extra images."""
        if self.state.stage in (*ENDED, JourneyStage.AWAITING_PAYMENT):
            raise ApplicationError("Only a paid, active journey can get extra images", type="NotActive")

    @workflow.query
    def get_state(self) -> JourneyState:
        """Where the journey is now."""
        return self._snapshot()

    async def _finish_training(self) -> None:
        assert self.request is not None
        assert self.state.version_id is not None
        version_id = self.state.version_id
        while True:
            assert self.state.training_id is not None
            status = await training.watch(
                version_id,
                TrainingStatus(training_id=self.state.training_id, status="starting"),
                timedelta(seconds=self.request.poll_seconds),
                timedelta(seconds=self.request.deadline_seconds),
                lambda: self.training_result,
                lambda: self.cancel_reason,
            )
            succeeded = status.status == "succeeded"
            metrics.training("succeeded" if succeeded else "failed", workflow.now() - self.training_started)
            # The zip is the customer's photos too: kept only while a failed training may be retried.
            prefixes = training.cleanup_prefixes(self.state.payment_id, version_id, succeeded)
            if succeeded and workflow.patched(READY_BEFORE_CLEANUP):
                # Ready here before the ledger says so: the API lets prompts through once the ledger
                # says ready, and from that moment the journey must take them (no 409 window); tidying
                # the photos comes last.
                self.state = self.state.model_copy(update={"model_version": status.model_version})
                self._set_stage(JourneyStage.READY)
                await training.record_outcome(version_id, status)
                await training.delete(*prefixes)
                return
            await training.record_outcome(version_id, status)
            if not succeeded:
                reason = await self._hold_for_retry(status.error or f"Training {status.status}")
                if reason is None:
                    continue
                await self._fail(reason, with_zip=True, recorded=True)
                return
            await training.delete(*prefixes)
            self.state = self.state.model_copy(update={"model_version": status.model_version})
            self._set_stage(JourneyStage.READY)
            return

    async def _hold_for_retry(self, reason: str) -> str | None:
        """Before refunding a failed training, give operators a window to retry it once.

        Returns None when the training was submitted again, else the reason to fail with. Journeys
        whose train request carries no window (all started before the window existed) skip this
        without a command, so their histories replay unchanged.
        """
        assert self.request is not None
        assert self.state.version_id is not None
        version_id = self.state.version_id
        window = self.request.retry_window_seconds
        if not window or self.retry_settled or self.cancel_reason is not None:
            return reason
        self.state = self.state.model_copy(update={"error": reason})
        self.holding = True
        self._set_stage(JourneyStage.FAILED)
        try:
            await workflow.wait_condition(
                lambda: self.retry_reason is not None or self.cancel_reason is not None,
                timeout=timedelta(seconds=window),
                timeout_summary="wait for an operator's retry, then refund",
            )
        except TimeoutError:
            pass
        self.holding = False
        if self.retry_reason is None or self.cancel_reason is not None:
            self.retry_settled = True
            return reason
        try:
            submitted = await training.resubmit(
                version_id, self.request.class_name, self.state.trigger_token or TRIGGER_TOKEN
            )
        except ActivityError as err:
            workflow.logger.warning("training not started again: %s", err.cause or err)
            again = f"The training could not be started again: {customer_reason(err)}"
            await training.record_outcome(
                version_id, TrainingStatus(training_id="", status="failed", error=again)
            )
            self.retry_settled = True
            return again
        self.training_result = None
        self.training_started = workflow.now()
        metrics.training("started")
        self.state = self.state.model_copy(update={"training_id": submitted.training_id, "error": None})
        self._set_stage(JourneyStage.TRAINING)
        self.retry_settled = True
        return None

    async def _serve_until_continue_as_new(self) -> None:
        """Prompts arrive as updates; keep history short by continuing as a new run now and then."""
        await workflow.wait_condition(
            lambda: (
                not self.prompting
                and (
                    self.served_this_run >= self.journey.prompts_per_run
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        snapshot = self._snapshot().model_copy(update={"runs": self.state.runs + 1})
        workflow.continue_as_new(self.journey.model_copy(update={"state": snapshot}))

    async def _fail(self, reason: str, *, with_zip: bool, recorded: bool = False) -> None:
        """The model cannot be trained: mark it failed, refund, delete the customer's photos."""
        version_id = self.state.version_id
        assert version_id is not None
        self.state = self.state.model_copy(update={"error": reason})
        if not recorded:
            await training.record_outcome(
                version_id, TrainingStatus(training_id="", status="failed", error=reason)
            )
        self._refunded(await training.refund(self.state.payment_id, reason))
        await training.delete(*training.cleanup_prefixes(self.state.payment_id, version_id, with_zip))
        self._set_stage(JourneyStage.FAILED)

    def _refunded(self, result: RefundResult) -> RefundResult:
        """Remember a refused refund (until one succeeds), so the journey's details tell operators to settle it."""
        if result.error != self.state.refund_error:
            # A later refund that succeeded clears an earlier refusal.
            self.state = self.state.model_copy(update={"refund_error": result.error})
            workflow.set_current_details(self._details(self.state.stage))
        return result

    def _snapshot(self) -> JourneyState:
        return self.state.model_copy(update={"seen_events": tuple(self.checkout.seen)})

    def _details(self, stage: JourneyStage) -> str:
        if stage is JourneyStage.READY:
            left = self.state.images_quota - self.state.images_generated
            return f"Ready — {left} of {self.state.images_quota} images left"
        if stage is JourneyStage.FAILED and self.holding:
            assert self.request is not None
            minutes = round(self.request.retry_window_seconds / 60)
            return f"Failed: {self.state.error}; refund in {minutes} min unless an operator retries"
        if stage is JourneyStage.FAILED and self.state.refund_error is not None:
            return f"Failed: {self.state.error}; NOT refunded — {self.state.refund_error}; an operator must settle it"
        if stage is JourneyStage.FAILED:
            return f"Failed: {self.state.error}; refunded"
        if stage is JourneyStage.TRAINING:
            return f"Training on Replicate, started {self.training_started:%Y-%m-%d %H:%M} UTC"
        return DETAILS.get(stage, stage.value)

    def _set_stage(self, stage: JourneyStage) -> None:
        if stage is not self.state.stage:
            metrics.journey_stage(stage.value)
        if stage is JourneyStage.PAID and self.state.images_quota == 0:
            self.state = self.state.model_copy(update={"images_quota": self.state.plan.images})
        self.state = self.state.model_copy(update={"stage": stage})
        workflow.upsert_search_attributes([JOURNEY_STAGE.value_set(stage.value)])
        workflow.set_current_details(self._details(stage))

    async def _expire_checkout(self) -> bool:
        return await workflow.execute_activity_method(
            PaymentActivities.expire_checkout,
            self.state.payment_id,
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary="close the checkout",
        )

    async def _record_payment(self, outcome: JourneyStage) -> None:
        status = {JourneyStage.PAID: "paid", JourneyStage.PAYMENT_FAILED: "failed"}.get(outcome, "expired")
        await workflow.execute_activity_method(
            PaymentActivities.set_payment_status,
            PaymentUpdate(payment_id=self.state.payment_id, status=status, at=workflow.now()),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary=f"record payment {status}",
        )

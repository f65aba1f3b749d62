"""AddonWorkflow: an image pack bought for an existing model."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts.payment import (
        AddonApply,
        AddonGrant,
        AddonInput,
        AddonResult,
        AddonStage,
        Attention,
        CheckoutOpen,
        CheckoutOpened,
        CheckoutOutcome,
        PaymentEvent,
        PaymentUpdate,
        ResumeRequest,
    )
    from ecomdream.contracts.refusals import Refusal, refuse
    from ecomdream.contracts.search import JOURNEY_STAGE, NEEDS_OPERATOR, PAYMENT_ID, PLAN_NAME, VERSION_ID

from workflows import metrics
from workflows.checkout import Checkout, refund
from workflows.escalation import Escalation
from workflows.record import show

STAGE_OF = {
    CheckoutOutcome.EXPIRED: AddonStage.EXPIRED,
    CheckoutOutcome.CANCELLED: AddonStage.EXPIRED,
    CheckoutOutcome.PAYMENT_FAILED: AddonStage.PAYMENT_FAILED,
    CheckoutOutcome.CHECKOUT_FAILED: AddonStage.CHECKOUT_FAILED,
}


@workflow.defn
class AddonWorkflow:
    """Waits for the add-on's payment, then adds its images to the model's journey once (or refunds it)."""

    @workflow.init
    def __init__(self, addon: AddonInput) -> None:
        self.checkout = Checkout(addon.payment_id, addon.pay_by)
        self.ledger = Escalation(self)
        self.attention: Attention | None = None

    @workflow.run
    async def run(self, addon: AddonInput) -> AddonResult:
        """Pay → add the images to the journey → done; a journey that can no longer use them gets a refund."""
        show(
            PAYMENT_ID.value_set(str(addon.payment_id)),
            PLAN_NAME.value_set(addon.plan.plan_name),
            VERSION_ID.value_set(str(addon.version_id)),
        )
        self._enter(AddonStage.AWAITING_PAYMENT, f"Waiting for payment of {addon.plan.images} extra images")
        outcome = await self.checkout.wait()
        await self.ledger.ledger(
            PaymentActivities.set_payment_status,
            PaymentUpdate(payment_id=addon.payment_id, status=outcome.ledger_status, at=workflow.now()),
            summary=f"record payment {outcome.ledger_status}",
        )
        metrics.payment("addon", outcome.value)
        if outcome is not CheckoutOutcome.PAID:
            stage = STAGE_OF[outcome]
            self._enter(stage, f"Ended without payment: {stage.value}")
            return AddonResult(payment_id=addon.payment_id, stage=stage)
        return await self._apply(addon)

    @workflow.update
    async def open_checkout(self, request: CheckoutOpen) -> CheckoutOpened:
        """Open the Stripe checkout (sent with the workflow's start); a repeat returns the first answer."""
        return await self.checkout.open(request)

    @open_checkout.validator
    def validate_open_checkout(self, request: CheckoutOpen) -> None:
        """One checkout per add-on."""
        self.checkout.refusal_to_open()

    @workflow.signal
    def payment_event(self, event: PaymentEvent) -> None:
        """A verified Stripe event about this payment."""
        self.checkout.apply(event)

    @workflow.update
    def resume(self, request: ResumeRequest) -> None:
        """After fixing what stopped a step (`NeedsOperator=internal_error`), try the step again."""
        workflow.logger.info("operator resumed the add-on: %s", request.reason)
        self.ledger.resume()

    @resume.validator
    def validate_resume(self, request: ResumeRequest) -> None:
        """Only an add-on whose step waits for an operator."""
        if not self.ledger.waiting_for_operator:
            raise refuse(Refusal.NOTHING_TO_RESUME, "No step of this add-on is waiting for an operator")

    async def _apply(self, addon: AddonInput) -> AddonResult:
        self._enter(AddonStage.APPLYING, f"Paid — adding {addon.plan.images} images to the model's quota")
        grant = AddonGrant(addon_payment_id=addon.payment_id, images=addon.plan.images)
        try:
            applied = await self.ledger.ledger(
                PaymentActivities.apply_addon,
                AddonApply(journey_workflow_id=addon.journey_workflow_id, grant=grant),
                summary=f"add {addon.plan.images} images to the model's journey",
                answers=("JourneyEnded",),
            )
        except ActivityError:
            return await self._refund(addon)
        self._enter(AddonStage.APPLIED, f"Paid — {addon.plan.images} images added to the model's quota")
        return AddonResult(
            payment_id=addon.payment_id, stage=AddonStage.APPLIED, images_quota=applied.images_quota
        )

    async def _refund(self, addon: AddonInput) -> AddonResult:
        """The model cannot use the images (its journey failed or ended): the customer gets the money back."""
        result = await refund(addon.payment_id, "The model can no longer use extra images")
        if result.error is not None:
            self.flag(Attention.REFUND_REFUSED)
            self._enter(AddonStage.REFUNDED, f"NOT refunded — {result.error}; an operator must settle it")
        else:
            self._enter(AddonStage.REFUNDED, "Refunded: the model can no longer use extra images")
        return AddonResult(payment_id=addon.payment_id, stage=AddonStage.REFUNDED)

    def _enter(self, stage: AddonStage, details: str) -> None:
        show(JOURNEY_STAGE.value_set(stage.value))
        workflow.set_current_details(details)

    def flag(self, attention: Attention) -> None:
        """An operator must act (searchable as `NeedsOperator`)."""
        if self.attention is not attention:
            self.attention = attention
            metrics.operator_attention(attention.value)
            show(NEEDS_OPERATOR.value_set(attention.value))

    def clear(self, attention: Attention) -> None:
        """The reason for `attention` is gone."""
        if self.attention is attention:
            self.attention = None
            show(NEEDS_OPERATOR.value_unset())

"""AddonWorkflow: an image pack bought for an existing model."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payments import PaymentActivities
    from ecomdream.contracts.payment import (
        AddonGrant,
        AddonInput,
        AddonResult,
        JourneyStage,
        PaymentEvent,
        PaymentUpdate,
    )
    from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME, VERSION_ID
    from workflows.checkout import Checkout
    from workflows.journey import JourneyWorkflow
    from workflows.policies import LEDGER_RETRY, LEDGER_TIMEOUT


@workflow.defn
class AddonWorkflow:
    """Waits for the add-on's payment, then grants its images to the model's journey once."""

    @workflow.init
    def __init__(self, addon: AddonInput) -> None:
        self.checkout = Checkout(addon.pay_by)

    @workflow.run
    async def run(self, addon: AddonInput) -> AddonResult:
        """Pay → grant → done."""
        workflow.upsert_search_attributes(
            [
                PAYMENT_ID.value_set(str(addon.payment_id)),
                PLAN_NAME.value_set(addon.plan.plan_name),
                VERSION_ID.value_set(str(addon.version_id)),
                JOURNEY_STAGE.value_set(JourneyStage.AWAITING_PAYMENT.value),
            ]
        )
        workflow.set_current_details(f"Waiting for payment of {addon.plan.images} extra images")
        outcome = await self.checkout.wait()
        if outcome is JourneyStage.PAID:
            journey = workflow.get_external_workflow_handle_for(
                JourneyWorkflow.run, addon.journey_workflow_id
            )
            await journey.signal(
                JourneyWorkflow.add_images,
                AddonGrant(addon_payment_id=addon.payment_id, images=addon.plan.images),
            )
            workflow.set_current_details(f"Paid — {addon.plan.images} images added to the model's quota")
        else:
            workflow.set_current_details(f"Ended without payment: {outcome.value}")
        status = {JourneyStage.PAID: "paid", JourneyStage.PAYMENT_FAILED: "failed"}.get(outcome, "expired")
        await workflow.execute_activity_method(
            PaymentActivities.set_payment_status,
            PaymentUpdate(payment_id=addon.payment_id, status=status, at=workflow.now()),
            start_to_close_timeout=LEDGER_TIMEOUT,
            retry_policy=LEDGER_RETRY,
            summary=f"record payment {status}",
        )
        workflow.upsert_search_attributes([JOURNEY_STAGE.value_set(outcome.value)])
        return AddonResult(payment_id=addon.payment_id, outcome=outcome)

    @workflow.signal
    def payment_event(self, event: PaymentEvent) -> None:
        """A verified Stripe event about this payment."""
        self.checkout.apply(event)

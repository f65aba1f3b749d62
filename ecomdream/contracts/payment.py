"""Payment contracts: journey and add-on inputs, Stripe events as signals, the journey's visible state."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    """Base of every durable payload: immutable, unknown fields ignored so old histories still decode."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class JourneyStage(StrEnum):
    """The stages operators filter journeys by (the `JourneyStage` search attribute)."""

    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    EXPIRED = "expired"
    PAYMENT_FAILED = "payment_failed"
    VALIDATING = "validating"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"


class PaymentEventKind(StrEnum):
    """The Stripe events a payment workflow reacts to."""

    COMPLETED = "checkout.session.completed"
    ASYNC_SUCCEEDED = "checkout.session.async_payment_succeeded"
    ASYNC_FAILED = "checkout.session.async_payment_failed"
    EXPIRED = "checkout.session.expired"


class PaymentEvent(Contract):
    """A verified Stripe event about this payment (no personal data: the email stays in Postgres)."""

    event_id: str
    kind: PaymentEventKind
    payment_status: str | None = None

    @property
    def settles_payment(self) -> bool:
        """Whether the money is in (or nothing was owed)."""
        if self.kind is PaymentEventKind.ASYNC_SUCCEEDED:
            return True
        return self.kind is PaymentEventKind.COMPLETED and self.payment_status in {
            "paid",
            "no_payment_required",
        }


class PlanTerms(Contract):
    """What the customer bought."""

    plan_id: int
    plan_name: str
    images: int = Field(gt=0)


class JourneyInput(Contract):
    """Start (or continue-as-new) input of a JourneyWorkflow."""

    payment_id: uuid.UUID
    plan: PlanTerms
    pay_by: datetime
    state: JourneyState | None = None
    prompts_per_run: int = Field(default=500, ge=1, description="Continue-as-new after this many prompts")


class JourneyState(Contract):
    """Everything the journey knows; carried across continue-as-new and returned by its query."""

    payment_id: uuid.UUID
    plan: PlanTerms
    stage: JourneyStage = JourneyStage.AWAITING_PAYMENT
    seen_events: tuple[str, ...] = ()
    version_id: uuid.UUID | None = None
    class_name: str | None = None
    trigger_token: str | None = None
    model_version: str | None = None
    training_id: str | None = None
    seen_webhooks: tuple[str, ...] = ()
    images_quota: int = 0
    images_generated: int = 0
    prompts_served: int = 0
    runs: int = 1
    applied_addons: tuple[uuid.UUID, ...] = ()
    applied_grants: tuple[uuid.UUID, ...] = ()
    error: str | None = None
    refund_error: str | None = None


class AddonInput(Contract):
    """Start input of an AddonWorkflow: a pack of images for an existing model."""

    payment_id: uuid.UUID
    plan: PlanTerms
    version_id: uuid.UUID
    journey_workflow_id: str
    pay_by: datetime


class AddonGrant(Contract):
    """Signal to a journey: a paid add-on adds images to the model's quota (once per add-on payment)."""

    addon_payment_id: uuid.UUID
    images: int = Field(gt=0)


class AddonResult(Contract):
    """How an add-on purchase ended."""

    payment_id: uuid.UUID
    outcome: JourneyStage


class PaymentUpdate(Contract):
    """Activity input: move a payment row to a new status."""

    payment_id: uuid.UUID
    status: str
    at: datetime


class RefundRequest(Contract):
    """Activity input: refund a payment in full (idempotent per payment)."""

    payment_id: uuid.UUID
    reason: str


class RefundResult(Contract):
    """What the refund did."""

    refund_id: str | None
    amount: int
    # Set when Stripe refused the refund (e.g. a disputed charge): nothing was refunded, an operator must act.
    error: str | None = None


class QuotaUpdate(Contract):
    """Activity input: the model's quota as the journey now knows it."""

    version_id: uuid.UUID
    images_quota: int
    addon_payment_id: uuid.UUID | None = None


JourneyInput.model_rebuild()


class CancelRequest(Contract):
    """Operator action: stop the journey (cancels a running training and refunds)."""

    reason: str = Field(min_length=1, max_length=200)


class RetryRequest(Contract):
    """Operator action: train a failed model again from the same photos (once, before the refund)."""

    reason: str = Field(min_length=1, max_length=200)


class OperatorRefund(Contract):
    """Operator action: refund the payment now (idempotent)."""

    reason: str = Field(min_length=1, max_length=200)


class GrantRequest(Contract):
    """Operator action: add images to the model's quota; recorded in the ledger."""

    grant_id: uuid.UUID
    images: int = Field(gt=0, le=100_000)
    reason: str = Field(min_length=1, max_length=200)


class GrantRecord(Contract):
    """Activity input: write a grant to the ledger and the new quota to the read model."""

    grant_id: uuid.UUID
    payment_id: uuid.UUID
    version_id: uuid.UUID | None
    images: int
    images_quota: int
    reason: str

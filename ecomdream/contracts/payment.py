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
    """The stages operators filter journeys by (the `JourneyStage` search attribute).

    Every state an operator needs to tell apart is a stage of its own, never a stage plus a flag.
    """

    AWAITING_PAYMENT = "awaiting_payment"
    CHECKOUT_FAILED = "checkout_failed"
    EXPIRED = "expired"
    PAYMENT_FAILED = "payment_failed"
    PAID = "paid"
    VALIDATING = "validating"
    TRAINING = "training"
    AWAITING_RETRY = "awaiting_retry"
    CANCELLING = "cancelling"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The customer deleted the model: running work was stopped (refunded unless the model was ready).
    DELETED = "deleted"


# Journeys in these stages will not change any more.
ENDED_STAGES = frozenset(
    {
        JourneyStage.CHECKOUT_FAILED,
        JourneyStage.EXPIRED,
        JourneyStage.PAYMENT_FAILED,
        JourneyStage.FAILED,
        JourneyStage.CANCELLED,
        JourneyStage.DELETED,
    }
)
# Nothing was paid (or the payment is not in yet).
UNPAID_STAGES = frozenset(
    {
        JourneyStage.AWAITING_PAYMENT,
        JourneyStage.CHECKOUT_FAILED,
        JourneyStage.EXPIRED,
        JourneyStage.PAYMENT_FAILED,
    }
)


class AddonStage(StrEnum):
    """Stages of an add-on purchase (the same `JourneyStage` search attribute, on AddonWorkflow)."""

    AWAITING_PAYMENT = "awaiting_payment"
    CHECKOUT_FAILED = "checkout_failed"
    EXPIRED = "expired"
    PAYMENT_FAILED = "payment_failed"
    APPLYING = "applying"
    APPLIED = "applied"
    REFUNDED = "refunded"


class CheckoutOutcome(StrEnum):
    """How a checkout ended."""

    PAID = "paid"
    EXPIRED = "expired"
    PAYMENT_FAILED = "payment_failed"
    CHECKOUT_FAILED = "checkout_failed"
    CANCELLED = "cancelled"

    @property
    def ledger_status(self) -> str:
        """The payment row's status for this outcome."""
        if self is CheckoutOutcome.PAID:
            return "paid"
        return "expired" if self in (CheckoutOutcome.EXPIRED, CheckoutOutcome.CANCELLED) else "failed"


class Attention(StrEnum):
    """Why an operator must act on a workflow (the `NeedsOperator` search attribute; unset when none)."""

    REFUND_REFUSED = "refund_refused"
    LEDGER_FAILING = "ledger_failing"
    INTERNAL_ERROR = "internal_error"


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


class CheckoutOpen(Contract):
    """The `open_checkout` update (sent with the workflow's start): open the Stripe checkout for a payment."""

    payment_id: uuid.UUID
    plan_id: int
    pay_by: datetime
    promocode: str | None = None
    version_id: uuid.UUID | None = None


class CheckoutOpened(Contract):
    """Where the customer pays, and for how much."""

    payment_id: uuid.UUID
    url: str
    session_id: str
    amount_total: int
    currency: str
    promocode_applied: bool


class ServedPrompt(Contract):
    """A prompt the journey served: a retried request (same Idempotency-Key) gets this answer again."""

    prompt_id: uuid.UUID
    status: str
    images: int = 0
    error: str | None = None


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
    checkout: CheckoutOpened | None = None
    attention: Attention | None = None
    training_started_at: datetime | None = None
    # The latest prompts served (carried across continue-as-new): idempotent retries find their answer here.
    served_prompts: tuple[ServedPrompt, ...] = ()
    # While a failed training waits for an operator's retry: when the refund happens without one.
    refund_at: datetime | None = None


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
    stage: AddonStage
    images_quota: int | None = None


class AddonApply(Contract):
    """Activity input: hand a paid add-on to its model's journey (the journey's `add_images` update)."""

    journey_workflow_id: str
    grant: AddonGrant


class AddonApplied(Contract):
    """The model's quota after the add-on."""

    images_quota: int


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


JourneyInput.model_rebuild()


class CancelRequest(Contract):
    """Operator action: stop the journey (cancels a running training and refunds)."""

    reason: str = Field(min_length=1, max_length=200)


class DeleteRequest(Contract):
    """The customer deletes the model: stop running work and end (a `DeletionWorkflow` sends it)."""

    receipt_id: uuid.UUID


class RetryRequest(Contract):
    """Operator action: train a failed model again from the same photos (once, before the refund)."""

    reason: str = Field(min_length=1, max_length=200)


class ResumeRequest(Contract):
    """Operator action: the cause of a stopped step was fixed; try it again."""

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

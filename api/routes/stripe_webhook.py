"""The Stripe webhook: verify, record the checkout facts, hand the event to the payment's workflow."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import stripe
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from api.deps import StateDep
from api.routes.payments import plan_terms
from api.schemas.payments import WebhookAck
from ecomdream.contracts.payment import PaymentEvent, PaymentEventKind
from ecomdream.db.session import transaction
from ecomdream.errors import InvalidRequest
from ecomdream.metrics import WEBHOOKS
from ecomdream.models import Payment, PaymentStatus
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository

log = logging.getLogger("ecomdream.api.stripe")
router = APIRouter(prefix="/api/v1/payments", tags=["payments"])

HANDLED = {kind.value for kind in PaymentEventKind}


class _CustomerDetails(BaseModel):
    email: str | None = None


class _ExpandedIntent(BaseModel):
    id: str


class _CheckoutSession(BaseModel):
    """The parts of a Checkout Session we use; anything else Stripe sends is ignored."""

    id: str
    client_reference_id: str | None = None
    metadata: dict[str, str] | None = None
    payment_intent: str | _ExpandedIntent | None = None
    payment_status: str | None = None
    amount_total: int | None = None
    customer_details: _CustomerDetails | None = None

    def payment_id(self) -> uuid.UUID | None:
        raw = self.client_reference_id or (self.metadata or {}).get("payment_id")
        try:
            return uuid.UUID(str(raw))
        except ValueError:
            return None

    def intent_id(self) -> str | None:
        intent = self.payment_intent
        return intent.id if isinstance(intent, _ExpandedIntent) else intent or None


class _EventData(BaseModel):
    object: dict[str, Any]


class _Event(BaseModel):
    id: str
    type: str
    data: _EventData


@router.post("/webhook", response_model=WebhookAck, responses={400: {"description": "Bad signature"}})
async def stripe_webhook(request: Request, state: StateDep) -> WebhookAck:
    """Receive a Stripe event; each event has one effect however often and in whatever order it arrives."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    try:
        # The official check (signature and timestamp tolerance); the body is parsed by us below.
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"),
            signature,
            state.settings.stripe_webhook_secret.get_secret_value(),
            tolerance=stripe.Webhook.DEFAULT_TOLERANCE,
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        log.warning("rejected Stripe webhook: %s", type(exc).__name__)
        WEBHOOKS.labels("stripe", "bad_signature").inc()
        raise InvalidRequest("Invalid Stripe signature") from exc
    try:
        event = _Event.model_validate_json(payload)
    except ValidationError as exc:
        WEBHOOKS.labels("stripe", "malformed").inc()
        raise InvalidRequest("The webhook body is not a Stripe event") from exc
    if event.type not in HANDLED:
        WEBHOOKS.labels("stripe", "ignored").inc()
        return WebhookAck()
    try:
        obj = _CheckoutSession.model_validate(event.data.object)
    except ValidationError as exc:
        WEBHOOKS.labels("stripe", "malformed").inc()
        raise InvalidRequest("The webhook event is not a Checkout Session") from exc
    payment_id = obj.payment_id()
    async with transaction(state.sessionmaker) as session:
        payment = await PaymentRepository(session).get(payment_id) if payment_id else None
        if payment is None:
            log.warning("Stripe event %s for an unknown payment (%s)", event.id, obj.client_reference_id)
            return WebhookAck()
        await PaymentRepository(session).record_checkout_details(
            payment.id,
            session_id=obj.id,
            payment_intent_id=obj.intent_id(),
            amount_paid=obj.amount_total if obj.payment_status != "unpaid" else None,
            email=obj.customer_details.email if obj.customer_details else None,
        )
        target = await _target(session, payment)
        plan = await PlanRepository(session).get(payment.plan_id)
        assert plan is not None
    signal = PaymentEvent(
        event_id=event.id, kind=PaymentEventKind(event.type), payment_status=obj.payment_status
    )
    assert payment.expires_at is not None
    await state.journeys.deliver_payment_event(
        payment.id,
        plan_terms(plan),
        payment.expires_at,
        target,
        signal,
        # A workflow that gave up waiting must hear of money that arrives: it is started again if it ended.
        money_may_be_lost=payment.status in (PaymentStatus.PENDING, PaymentStatus.EXPIRED)
        and signal.settles_payment,
    )
    WEBHOOKS.labels("stripe", "accepted").inc()
    return WebhookAck()


async def _target(session: Any, payment: Payment) -> tuple[uuid.UUID, uuid.UUID] | None:
    """For add-ons: (version id, the version's initial payment id)."""
    if payment.version_id is None:
        return None
    plan = await PlanRepository(session).get(payment.plan_id)
    if plan is not None and plan.is_init:
        return None
    version = await VersionRepository(session).get(payment.version_id)
    return (version.id, version.payment_id) if version else None

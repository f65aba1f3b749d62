"""The Stripe webhook: verify, record the checkout facts, hand the event to the payment's workflow."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import stripe
from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.deps import StateDep
from api.routes.payments import start_attributes, workflow_input
from api.schemas.payments import WebhookAck
from ecomdream.contracts.payment import PaymentEvent, PaymentEventKind, PlanTerms
from ecomdream.db.session import transaction
from ecomdream.errors import BadRequest
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
        raise BadRequest("Invalid Stripe signature") from exc
    try:
        event = _Event.model_validate_json(payload)
    except ValidationError as exc:
        WEBHOOKS.labels("stripe", "malformed").inc()
        raise BadRequest("The webhook body is not a Stripe event") from exc
    if event.type not in HANDLED:
        WEBHOOKS.labels("stripe", "ignored").inc()
        return WebhookAck()
    try:
        obj = _CheckoutSession.model_validate(event.data.object)
    except ValidationError as exc:
        WEBHOOKS.labels("stripe", "malformed").inc()
        raise BadRequest("The webhook event is not a Checkout Session") from exc
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
    terms = PlanTerms(plan_id=plan.id, plan_name=plan.plan_name, images=plan.feature_amount_images)
    await _deliver(state, payment, terms, target, signal)
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


async def _deliver(
    state: StateDep,
    payment: Payment,
    terms: PlanTerms,
    target: tuple[uuid.UUID, uuid.UUID] | None,
    event: PaymentEvent,
) -> None:
    """Signal the workflow; start it again only for money arriving on a journey that gave up waiting."""
    assert payment.expires_at is not None
    run, arg, workflow_id = workflow_input(
        payment.id, terms, payment.expires_at, target, state.settings.journey_prompts_per_run
    )
    client: Client = state.temporal
    revive = payment.status in (PaymentStatus.PENDING, PaymentStatus.EXPIRED) and event.kind in (
        PaymentEventKind.COMPLETED,
        PaymentEventKind.ASYNC_SUCCEEDED,
    )
    if revive:
        await client.start_workflow(
            run,
            arg,
            id=workflow_id,
            task_queue=state.settings.temporal_task_queue,
            start_signal="payment_event",
            start_signal_args=[event],
            static_summary=f"{terms.plan_name} — payment {payment.id}",
            search_attributes=start_attributes(payment.id, terms),
        )
        return
    try:
        await client.get_workflow_handle(workflow_id).signal("payment_event", event)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        log.info(
            "Stripe event %s for payment %s arrived after its workflow ended", event.event_id, payment.id
        )

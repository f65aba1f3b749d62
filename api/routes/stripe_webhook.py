"""The Stripe webhook: verify, record the checkout facts, hand the event to the payment's workflow."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import stripe
from fastapi import APIRouter, Request
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


def _payment_id(obj: dict[str, Any]) -> uuid.UUID | None:
    raw = obj.get("client_reference_id") or (obj.get("metadata") or {}).get("payment_id")
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def _intent_id(obj: dict[str, Any]) -> str | None:
    intent = obj.get("payment_intent")
    if isinstance(intent, dict):
        return str(intent.get("id")) if intent.get("id") else None
    return str(intent) if intent else None


@router.post("/webhook", response_model=WebhookAck, responses={400: {"description": "Bad signature"}})
async def stripe_webhook(request: Request, state: StateDep) -> WebhookAck:
    """Receive a Stripe event; each event has one effect however often and in whatever order it arrives."""
    payload = await request.body()
    signature = request.headers.get("stripe-signature", "")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, state.settings.stripe_webhook_secret.get_secret_value()
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        log.warning("rejected Stripe webhook: %s", type(exc).__name__)
        WEBHOOKS.labels("stripe", "bad_signature").inc()
        raise BadRequest("Invalid Stripe signature") from exc
    if event.type not in HANDLED:
        WEBHOOKS.labels("stripe", "ignored").inc()
        return WebhookAck()
    obj: dict[str, Any] = (
        event.data.object.to_dict() if hasattr(event.data.object, "to_dict") else dict(event.data.object)
    )
    payment_id = _payment_id(obj)
    async with transaction(state.sessionmaker) as session:
        payment = await PaymentRepository(session).get(payment_id) if payment_id else None
        if payment is None:
            log.warning(
                "Stripe event %s for an unknown payment (%s)", event.id, obj.get("client_reference_id")
            )
            return WebhookAck()
        details = obj.get("customer_details") or {}
        await PaymentRepository(session).record_checkout_details(
            payment.id,
            session_id=str(obj.get("id")),
            payment_intent_id=_intent_id(obj),
            amount_paid=obj.get("amount_total") if obj.get("payment_status") != "unpaid" else None,
            email=details.get("email"),
        )
        target = await _target(session, payment)
        plan = await PlanRepository(session).get(payment.plan_id)
        assert plan is not None
    signal = PaymentEvent(
        event_id=event.id, kind=PaymentEventKind(event.type), payment_status=obj.get("payment_status")
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

"""Plans, checkout, payment status and the Stripe webhook."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params.checkout import SessionCreateParams
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import ReadSessionDep, StateDep
from api.schemas.payments import (
    PaymentCreate,
    PaymentCreated,
    PaymentPublic,
    PlanPublic,
    PlansPublic,
)
from ecomdream.clients.stripe import create_checkout_session, resolve_promotion_code
from ecomdream.contracts import addon_id, journey_id
from ecomdream.contracts.payment import AddonInput, JourneyInput, JourneyStage, PlanTerms
from ecomdream.contracts.search import JOURNEY_STAGE, PAYMENT_ID, PLAN_NAME
from ecomdream.db.session import transaction
from ecomdream.errors import BadRequest, Conflict, Gone, NotFound, ServiceUnavailable
from ecomdream.models import Payment, PaymentStatus, Plan, VersionStatus
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository
from workflows.addon import AddonWorkflow
from workflows.journey import JourneyWorkflow

log = logging.getLogger("ecomdream.api.payments")
router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


@router.get("/plans/list", response_model=PlansPublic)
async def list_plans(session: ReadSessionDep) -> PlansPublic:
    """Plans on sale, fewest images first."""
    plans = await PlanRepository(session).list_on_sale()
    return PlansPublic(plans=[PlanPublic.model_validate(p) for p in plans])


async def _addon_target(session: AsyncSession, version_id: uuid.UUID | None) -> tuple[uuid.UUID, uuid.UUID]:
    """The (version id, initial payment id) an add-on is bought for; refuses versions that cannot use it."""
    if version_id is None:
        raise BadRequest("You must also provide version id")
    version = await VersionRepository(session).get(version_id)
    if version is None:
        raise NotFound("Invalid version id")
    if version.deleted_at is not None or version.status == VersionStatus.FAILED:
        raise Gone("This model can no longer be used")
    if version.status != VersionStatus.READY:
        raise Conflict("Please wait for your version to be ready")
    return version.id, version.payment_id


def _checkout_params(
    state: StateDep, plan: Plan, payment_id: uuid.UUID, expires_at: datetime
) -> SessionCreateParams:
    settings = state.settings
    return {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": plan.currency,
                    "unit_amount": plan.price,
                    "product_data": {"name": plan.plan_name, "description": plan.plan_description},
                },
                "quantity": 1,
            }
        ],
        "client_reference_id": str(payment_id),
        "metadata": {"payment_id": str(payment_id), "plan_id": str(plan.id)},
        "payment_intent_data": {"metadata": {"payment_id": str(payment_id)}},
        "success_url": settings.checkout_success_url,
        "cancel_url": settings.checkout_cancel_url,
        "expires_at": int(expires_at.timestamp()),
    }


@router.post("/create", status_code=201, response_model=PaymentCreated)
async def create_payment(body: PaymentCreate, state: StateDep) -> PaymentCreated:
    """Open a Stripe checkout for a plan; the payment is recorded before the customer can pay."""
    promo = None
    if body.promocode_id:
        # Looked up first: a provider outage here leaves nothing behind.
        try:
            promo = await resolve_promotion_code(
                state.stripe, body.promocode_id, int(datetime.now(UTC).timestamp())
            )
        except stripe.StripeError as exc:
            log.warning("promotion code lookup failed: %s", exc)
            raise ServiceUnavailable("We could not reach the payment provider, please try again") from exc
    async with transaction(state.sessionmaker) as session:
        plan = await PlanRepository(session).get(body.plan_id)
        if plan is None or plan.is_deprecated:
            raise BadRequest("Invalid plan id")
        target = None if plan.is_init else await _addon_target(session, body.version_id)
        payment_id = uuid.uuid4()
        expires_at = datetime.now(UTC) + timedelta(minutes=state.settings.checkout_expiry_minutes)
        await PaymentRepository(session).add(
            Payment(
                id=payment_id,
                plan_id=plan.id,
                version_id=target[0] if target else None,
                status=PaymentStatus.PENDING.value,
                amount_total=plan.price,
                currency=plan.currency,
                expires_at=expires_at,
            )
        )
    terms = PlanTerms(plan_id=plan.id, plan_name=plan.plan_name, images=plan.feature_amount_images)
    try:
        checkout, applied = await create_checkout_session(
            state.stripe,
            payment_id=str(payment_id),
            params=_checkout_params(state, plan, payment_id, expires_at),
            promotion_code=promo,
        )
    except stripe.StripeError as exc:
        log.warning("checkout creation failed for payment %s: %s", payment_id, exc)
        await _mark(state, payment_id, PaymentStatus.FAILED)
        raise ServiceUnavailable("We could not reach the payment provider, please try again") from exc
    async with transaction(state.sessionmaker) as session:
        payment = await PaymentRepository(session).get(payment_id)
        assert payment is not None
        payment.session_id = checkout.id
        payment.checkout_url = checkout.url
        payment.amount_total = checkout.amount_total or 0
        payment.promocode_id = promo if applied else None
    try:
        await _start_payment_workflow(state.temporal, state, payment_id, terms, expires_at, target)
    except Exception as exc:
        # Without a workflow nobody would act on the payment: close the checkout so it cannot take money.
        log.error("could not start the workflow of payment %s: %s", payment_id, exc)
        try:
            await state.stripe.v1.checkout.sessions.expire_async(checkout.id)
        except stripe.StripeError as closing:
            log.error(
                "checkout %s of payment %s is still open without a workflow; refund it if it is paid: %s",
                checkout.id,
                payment_id,
                closing,
            )
        finally:
            await _mark(state, payment_id, PaymentStatus.FAILED)
        raise ServiceUnavailable("We could not open your checkout, please try again") from exc
    return PaymentCreated(
        payment_id=payment_id,
        url=checkout.url or "",
        promocode_applied=applied,
        amount_total=checkout.amount_total or 0,
        currency=plan.currency,
    )


async def _mark(state: StateDep, payment_id: uuid.UUID, status: PaymentStatus) -> None:
    async with transaction(state.sessionmaker) as session:
        await PaymentRepository(session).set_status(payment_id, status, datetime.now(UTC))


def start_attributes(payment_id: uuid.UUID, terms: PlanTerms) -> TypedSearchAttributes:
    """Search attributes set at start, so a journey is findable before its first task runs."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(PAYMENT_ID, str(payment_id)),
            SearchAttributePair(PLAN_NAME, terms.plan_name),
            SearchAttributePair(JOURNEY_STAGE, JourneyStage.AWAITING_PAYMENT.value),
        ]
    )


def workflow_input(
    payment_id: uuid.UUID,
    terms: PlanTerms,
    pay_by: datetime,
    target: tuple[uuid.UUID, uuid.UUID] | None,
    prompts_per_run: int,
) -> tuple[Any, Any, str]:
    """(run method, input, workflow id) for a payment."""
    if target is None:
        return (
            JourneyWorkflow.run,
            JourneyInput(payment_id=payment_id, plan=terms, pay_by=pay_by, prompts_per_run=prompts_per_run),
            journey_id(payment_id),
        )
    addon = AddonInput(
        payment_id=payment_id,
        plan=terms,
        version_id=target[0],
        journey_workflow_id=journey_id(target[1]),
        pay_by=pay_by,
    )
    return AddonWorkflow.run, addon, addon_id(payment_id)


async def _start_payment_workflow(
    client: Client,
    state: StateDep,
    payment_id: uuid.UUID,
    terms: PlanTerms,
    pay_by: datetime,
    target: tuple[uuid.UUID, uuid.UUID] | None,
) -> None:
    run, arg, workflow_id = workflow_input(
        payment_id, terms, pay_by, target, state.settings.journey_prompts_per_run
    )
    await client.start_workflow(
        run,
        arg,
        id=workflow_id,
        task_queue=state.settings.temporal_task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"{terms.plan_name} — payment {payment_id}",
        search_attributes=start_attributes(payment_id, terms),
    )


@router.get("/{payment_id}", response_model=PaymentPublic)
async def get_payment(payment_id: uuid.UUID, session: ReadSessionDep) -> PaymentPublic:
    """A payment's status as recorded in the ledger."""
    payment = await PaymentRepository(session).get(payment_id)
    if payment is None:
        raise NotFound("Invalid payment id")
    return PaymentPublic(
        payment_id=payment.id,
        status=payment.status,
        plan_id=payment.plan_id,
        amount_total=payment.amount_total,
        amount_paid=payment.amount_paid,
        currency=payment.currency,
        version_id=payment.version_id,
    )

"""Plans, checkout and payment status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import ReadSessionDep, StateDep
from api.schemas.payments import (
    PaymentCreate,
    PaymentCreated,
    PaymentPublic,
    PlanPublic,
    PlansPublic,
)
from ecomdream.contracts.payment import CheckoutOpen, PlanTerms
from ecomdream.errors import InvalidRequest, NoLongerAvailable, NotFound, NotNow
from ecomdream.models import Plan, VersionStatus
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])


@router.get("/plans/list", response_model=PlansPublic)
async def list_plans(session: ReadSessionDep) -> PlansPublic:
    """Plans on sale, fewest images first."""
    plans = await PlanRepository(session).list_on_sale()
    return PlansPublic(plans=[PlanPublic.model_validate(p) for p in plans])


async def _addon_target(session: AsyncSession, version_id: uuid.UUID | None) -> tuple[uuid.UUID, uuid.UUID]:
    """The (version id, initial payment id) an add-on is bought for; refuses versions that cannot use it."""
    if version_id is None:
        raise InvalidRequest("You must also provide version id")
    version = await VersionRepository(session).get(version_id)
    if version is None:
        raise NotFound("Invalid version id")
    if version.deleted_at is not None or version.status == VersionStatus.FAILED:
        raise NoLongerAvailable("This model can no longer be used")
    if version.status != VersionStatus.READY:
        raise NotNow("Please wait for your version to be ready")
    return version.id, version.payment_id


def plan_terms(plan: Plan) -> PlanTerms:
    """What a payment of this plan buys, as the workflows know it."""
    return PlanTerms(plan_id=plan.id, plan_name=plan.plan_name, images=plan.feature_amount_images)


@router.post("/create", status_code=201, response_model=PaymentCreated, responses={503: {}})
async def create_payment(body: PaymentCreate, state: StateDep, session: ReadSessionDep) -> PaymentCreated:
    """Open a Stripe checkout for a plan; the payment is recorded before the customer can pay."""
    plan = await PlanRepository(session).get(body.plan_id)
    if plan is None or plan.is_deprecated:
        raise InvalidRequest("Invalid plan id")
    target = None if plan.is_init else await _addon_target(session, body.version_id)
    request = CheckoutOpen(
        payment_id=uuid.uuid4(),
        plan_id=plan.id,
        pay_by=datetime.now(UTC) + timedelta(minutes=state.settings.checkout_expiry_minutes),
        promocode=body.promocode_id,
        version_id=target[0] if target else None,
    )
    opened = await state.journeys.open_checkout(request, plan_terms(plan), target)
    return PaymentCreated(
        payment_id=opened.payment_id,
        url=opened.url,
        promocode_applied=opened.promocode_applied,
        amount_total=opened.amount_total,
        currency=opened.currency,
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

"""Plans, checkout, payment status and the customer's access token."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from api.access import Caller, CallerDep, OptionalCallerDep, payment_of, version_of
from api.callbacks import ADDON_HAS_NONE
from api.deps import ReadSessionDep, StateDep
from api.errors import AUTH_RESPONSES, KEYED_RESPONSES
from api.guards import digest, new_token
from api.idempotency import Answer, Claim, idempotency_key, once, request_hash
from api.schemas.payments import (
    AccessTokenPublic,
    PaymentCreate,
    PaymentCreated,
    PaymentPublic,
    PlanPublic,
    PlansPublic,
)
from ecomdream.contracts.payment import CheckoutOpen, PlanTerms
from ecomdream.db.session import transaction
from ecomdream.errors import InvalidRequest, NoLongerAvailable, NotAuthenticated, NotNow
from ecomdream.models import Plan, VersionStatus
from ecomdream.repositories.access import AccessRepository
from ecomdream.repositories.payments import PlanRepository

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])
# Payment ids of keyed checkouts derive from the key, so a retry that takes over reaches the same journey.
KEYED_PAYMENTS = uuid.UUID("7d0c9c8e-3f7b-4d5e-9a51-2c3f0e6b8a14")


@router.get("/plans/list", response_model=PlansPublic)
async def list_plans(session: ReadSessionDep) -> PlansPublic:
    """Plans on sale, fewest images first."""
    plans = await PlanRepository(session).list_on_sale()
    return PlansPublic(plans=[PlanPublic.model_validate(p) for p in plans])


async def _addon_target(
    session: AsyncSession, caller: Caller | None, version_id: uuid.UUID | None
) -> tuple[uuid.UUID, uuid.UUID]:
    """The (version id, initial payment id) an add-on is bought for: the caller's own model, ready."""
    if version_id is None:
        raise InvalidRequest("You must also provide version id")
    if caller is None:
        raise NotAuthenticated(
            "An add-on pack is bought with the model's access token: `Authorization: Bearer`"
        )
    version, access = await version_of(session, caller, version_id)
    caller.owner_only(access)
    if version.deleted_at is not None or version.status == VersionStatus.FAILED:
        raise NoLongerAvailable("This model can no longer be used")
    if version.status != VersionStatus.READY:
        raise NotNow("Please wait for your version to be ready")
    return version.id, version.payment_id


def plan_terms(plan: Plan) -> PlanTerms:
    """What a payment of this plan buys, as the workflows know it."""
    return PlanTerms(plan_id=plan.id, plan_name=plan.plan_name, images=plan.feature_amount_images)


@router.post(
    "/create",
    status_code=201,
    response_model=PaymentCreated,
    responses={**KEYED_RESPONSES, 401: AUTH_RESPONSES[401], 503: {}},
)
async def create_payment(
    body: PaymentCreate, request: Request, state: StateDep, caller: OptionalCallerDep
) -> JSONResponse:
    """Open a Stripe checkout for a plan. An initial plan answers the customer's `access_token` (shown once),
    and with a `callback_url` the `webhook_secret` its events are signed with (shown once); an add-on pack
    (`version_id`) is bought with that model's token and issues neither."""
    # A short read: no database connection is held while the workflow opens the checkout.
    async with state.read_sessionmaker() as session:
        plan = await PlanRepository(session).get(body.plan_id)
        if plan is None or plan.is_deprecated:
            raise InvalidRequest("Invalid plan id")
        if body.callback_url and not plan.is_init:
            raise InvalidRequest(ADDON_HAS_NONE)
        target = None if plan.is_init else await _addon_target(session, caller, body.version_id)
    callback_url = await state.callbacks.checked(body.callback_url) if body.callback_url else None
    address = state.limits.address(request)
    scope = caller.token_digest if target and caller else digest(f"address:{address}")
    key = idempotency_key(request)
    claim: Claim | None = None
    if key is not None:
        claimed = await state.idempotency.claim(
            scope, key, request_hash("checkout", body.model_dump(mode="json"))
        )
        if isinstance(claimed, JSONResponse):
            return claimed
        claim = claimed
    await state.limits.open_checkout(address)

    async def open_checkout() -> Answer:
        payment_id = uuid.uuid5(KEYED_PAYMENTS, f"{scope}:{key}") if key else uuid.uuid4()
        opened = await state.journeys.open_checkout(
            CheckoutOpen(
                payment_id=payment_id,
                plan_id=plan.id,
                pay_by=datetime.now(UTC) + timedelta(minutes=state.settings.checkout_expiry_minutes),
                promocode=body.promocode_id,
                version_id=target[0] if target else None,
            ),
            plan_terms(plan),
            target,
        )
        # The journey's token opens its add-ons too; an initial plan gets a token of its own.
        token = None if target else new_token()
        async with transaction(state.sessionmaker) as writer:
            await AccessRepository(writer).grant(payment_id, digest(token) if token else scope)
            secret = (
                await state.callbacks.register(writer, payment_id, callback_url) if callback_url else None
            )
        created = PaymentCreated(
            payment_id=opened.payment_id,
            url=opened.url,
            promocode_applied=opened.promocode_applied,
            amount_total=opened.amount_total,
            currency=opened.currency,
            access_token=token,
            webhook_secret=secret,
        )
        return 201, created.model_dump(mode="json", exclude_none=True)

    return await once(state.idempotency, claim, open_checkout)


@router.get("/{payment_id}", response_model=PaymentPublic, responses=AUTH_RESPONSES)
async def get_payment(payment_id: uuid.UUID, session: ReadSessionDep, caller: CallerDep) -> PaymentPublic:
    """A payment's status as recorded in the ledger."""
    payment = await payment_of(session, caller, payment_id)
    return PaymentPublic(
        payment_id=payment.id,
        status=payment.status,
        plan_id=payment.plan_id,
        amount_total=payment.amount_total,
        amount_paid=payment.amount_paid,
        currency=payment.currency,
        version_id=payment.version_id,
        callback_url=payment.callback_url,
    )


@router.post(
    "/{payment_id}/token", status_code=201, response_model=AccessTokenPublic, responses=AUTH_RESPONSES
)
async def rotate_token(payment_id: uuid.UUID, state: StateDep, caller: CallerDep) -> AccessTokenPublic:
    """A new access token for the journey (and its add-ons); the one sent stops working at once."""
    async with transaction(state.sessionmaker) as session:
        await payment_of(session, caller, payment_id)
        token = new_token()
        await AccessRepository(session).rotate(caller.token_digest, digest(token))
    return AccessTokenPublic(access_token=token)

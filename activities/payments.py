"""Payment activities: the ledger in Postgres and refunds at Stripe. Each is one transaction, safe to repeat."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from sqlalchemy.dialects.postgresql import insert
from stripe.params.checkout import SessionCreateParams
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from ecomdream.clients.stripe import create_checkout_session, resolve_promotion_code
from ecomdream.contracts.payment import (
    AddonApplied,
    AddonApply,
    CheckoutOpen,
    CheckoutOpened,
    GrantRecord,
    PaymentUpdate,
    QuotaUpdate,
    RefundRequest,
    RefundResult,
)
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.models import Payment, PaymentStatus, Plan, QuotaGrant
from ecomdream.repositories.payments import PaymentRepository, PlanRepository
from ecomdream.repositories.versions import VersionRepository


@dataclass(frozen=True)
class CheckoutSetup:
    """Where Stripe sends the customer back after the checkout page."""

    success_url: str
    cancel_url: str


def inconsistent(message: str) -> ApplicationError:
    """The ledger does not hold what the workflow knows: retrying cannot help, an operator must look."""
    return ApplicationError(message, type="LedgerInconsistent", non_retryable=True)


def checkout_params(
    setup: CheckoutSetup, plan: Plan, payment_id: uuid.UUID, pay_by: datetime
) -> SessionCreateParams:
    """The Checkout Session for one payment of a plan (no personal data: Stripe collects the e-mail)."""
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
        "success_url": setup.success_url,
        "cancel_url": setup.cancel_url,
        "expires_at": int(pay_by.timestamp()),
    }


class PaymentActivities:
    """Activities that need the database and Stripe."""

    def __init__(
        self, sessionmaker: SessionMaker, stripe_client: stripe.StripeClient, setup: CheckoutSetup
    ) -> None:
        self.sessionmaker = sessionmaker
        self.stripe = stripe_client
        self.setup = setup

    @activity.defn
    async def open_checkout(self, request: CheckoutOpen) -> CheckoutOpened:
        """Record the payment, then create its Stripe checkout; a retry finds both again (idempotent)."""
        promo = None
        if request.promocode:
            promo = await resolve_promotion_code(
                self.stripe, request.promocode, int(datetime.now(UTC).timestamp())
            )
        plan = await self._record_pending(request)
        checkout, applied = await create_checkout_session(
            self.stripe,
            payment_id=str(request.payment_id),
            params=checkout_params(self.setup, plan, request.payment_id, request.pay_by),
            promotion_code=promo,
        )
        async with transaction(self.sessionmaker) as session:
            payment = await PaymentRepository(session).get(request.payment_id)
            assert payment is not None
            payment.session_id = checkout.id
            payment.checkout_url = checkout.url
            payment.amount_total = checkout.amount_total or 0
            payment.promocode_id = promo if applied else None
        return CheckoutOpened(
            payment_id=request.payment_id,
            url=checkout.url or "",
            session_id=checkout.id,
            amount_total=checkout.amount_total or 0,
            currency=plan.currency,
            promocode_applied=applied,
        )

    async def _record_pending(self, request: CheckoutOpen) -> Plan:
        """The payment row exists before the customer can pay, so no money arrives for an unknown payment."""
        async with transaction(self.sessionmaker) as session:
            plan = await PlanRepository(session).get(request.plan_id)
            if plan is None:
                raise inconsistent(f"unknown plan {request.plan_id}")
            payments = PaymentRepository(session)
            if await payments.get(request.payment_id) is None:
                await payments.add(
                    Payment(
                        id=request.payment_id,
                        plan_id=plan.id,
                        version_id=request.version_id,
                        status=PaymentStatus.PENDING.value,
                        amount_total=plan.price,
                        currency=plan.currency,
                        expires_at=request.pay_by,
                    )
                )
        return plan

    @activity.defn
    async def apply_addon(self, request: AddonApply) -> AddonApplied:
        """Hand a paid add-on to its model's journey (`add_images` update, once per add-on payment)."""
        handle = activity.client().get_workflow_handle(request.journey_workflow_id)
        try:
            applied: AddonApplied = await handle.execute_update(
                "add_images",
                request.grant,
                id=f"addon-{request.grant.addon_payment_id}",
                result_type=AddonApplied,
            )
            return applied
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.non_retryable:
                raise ApplicationError(cause.message, type="JourneyEnded", non_retryable=True) from err
            raise
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                raise ApplicationError(
                    "The model's journey has ended", type="JourneyEnded", non_retryable=True
                ) from err
            raise

    @activity.defn
    async def set_payment_status(self, update: PaymentUpdate) -> None:
        """Record a payment's new status (idempotent: timestamps are set once)."""
        async with transaction(self.sessionmaker) as session:
            await PaymentRepository(session).set_status(
                update.payment_id, PaymentStatus(update.status), update.at
            )

    @activity.defn
    async def refund_payment(self, request: RefundRequest) -> RefundResult:
        """Refund a payment in full at Stripe; the idempotency key makes a retry return the same refund."""
        async with transaction(self.sessionmaker) as session:
            payment = await PaymentRepository(session).get(request.payment_id)
            if payment is None:
                raise inconsistent(f"unknown payment {request.payment_id}")
            intent, already, paid, session_id = (
                payment.payment_intent_id,
                payment.refund_id,
                payment.amount_paid,
                payment.session_id,
            )
        if intent is None and already is None and session_id is not None:
            # Paid, but the webhook that names the charge has not come (or a cancel met a fresh payment).
            intent = await self._intent_of(session_id)
        if already:
            refund_id, amount = already, 0
        elif intent is not None:
            refund_id, amount = await self._refund(request, intent)
        elif paid:
            raise ApplicationError(
                "Stripe refused the refund: no charge was found for this payment",
                type="RefundRejected",
                non_retryable=True,
            )
        else:
            # Nothing was charged (a 100 % promotion code, or an unpaid checkout).
            refund_id, amount = None, 0
        async with transaction(self.sessionmaker) as session:
            await PaymentRepository(session).set_refund(
                request.payment_id, refund_id, activity.info().started_time
            )
        activity.logger.info("payment refunded (%s): %s", request.reason, refund_id)
        return RefundResult(refund_id=refund_id, amount=amount)

    async def _intent_of(self, session_id: str) -> str | None:
        checkout = await self.stripe.v1.checkout.sessions.retrieve_async(session_id)
        intent = checkout.payment_intent
        if intent is None or isinstance(intent, str):
            return intent
        return intent.id

    async def _refund(self, request: RefundRequest, intent: str) -> tuple[str, int]:
        try:
            refund = await self.stripe.v1.refunds.create_async(
                params={"payment_intent": intent, "metadata": {"payment_id": str(request.payment_id)}},
                options={"idempotency_key": f"refund-{request.payment_id}"},
            )
        except stripe.InvalidRequestError as error:
            if error.code == "charge_already_refunded":
                # Refunded outside the service (the Stripe Dashboard): adopt that refund.
                existing = await self.stripe.v1.refunds.list_async(
                    params={"payment_intent": intent, "limit": 100}
                )
                refunds = [r for r in existing.data if r.status not in ("failed", "canceled")]
                if refunds:
                    return refunds[0].id, sum(r.amount for r in refunds)
            # Stripe will give the same answer next time (a dispute, a deleted charge): an operator's case.
            raise ApplicationError(
                f"Stripe refused the refund: {error.user_message or error}",
                type="RefundRejected",
                non_retryable=True,
            ) from error
        return refund.id, refund.amount

    @activity.defn
    async def record_grant(self, grant: GrantRecord) -> None:
        """Write an operator's grant to the ledger (once per grant id) and the new quota to the read model."""
        async with transaction(self.sessionmaker) as session:
            await session.execute(
                insert(QuotaGrant)
                .values(
                    id=grant.grant_id,
                    payment_id=grant.payment_id,
                    version_id=grant.version_id,
                    images=grant.images,
                    reason=grant.reason,
                )
                .on_conflict_do_nothing(index_elements=[QuotaGrant.id])
            )
            if grant.version_id is not None:
                await VersionRepository(session).set_quota(grant.version_id, grant.images_quota)

    @activity.defn
    async def expire_checkout(self, payment_id: uuid.UUID) -> bool:
        """Close the payment's checkout so it can no longer take money; False if it was already paid."""
        async with transaction(self.sessionmaker) as session:
            payment = await PaymentRepository(session).get(payment_id)
            session_id = payment.session_id if payment else None
        if session_id is None:
            return True
        try:
            await self.stripe.v1.checkout.sessions.expire_async(session_id)
        except stripe.InvalidRequestError:
            checkout = await self.stripe.v1.checkout.sessions.retrieve_async(session_id)
            return checkout.status != "complete"
        return True

    @activity.defn
    async def record_quota(self, update: QuotaUpdate) -> None:
        """Store the model's quota in the read model."""
        async with transaction(self.sessionmaker) as session:
            await VersionRepository(session).set_quota(update.version_id, update.images_quota)

"""Payment activities: the ledger in Postgres and refunds at Stripe. Each is one transaction, safe to repeat."""

from __future__ import annotations

import uuid

import stripe
from sqlalchemy.dialects.postgresql import insert
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ecomdream.contracts.payment import GrantRecord, PaymentUpdate, QuotaUpdate, RefundRequest, RefundResult
from ecomdream.db.session import SessionMaker, transaction
from ecomdream.models import PaymentStatus, QuotaGrant
from ecomdream.repositories.payments import PaymentRepository
from ecomdream.repositories.versions import VersionRepository


class PaymentActivities:
    """Activities that need the database and Stripe."""

    def __init__(self, sessionmaker: SessionMaker, stripe_client: stripe.StripeClient) -> None:
        self.sessionmaker = sessionmaker
        self.stripe = stripe_client

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
                raise ValueError(f"unknown payment {request.payment_id}")
            intent, already = payment.payment_intent_id, payment.refund_id
        if already or intent is None:
            # Nothing was charged (100 % promo) or the refund was already recorded.
            refund_id, amount = already, 0
        else:
            refund_id, amount = await self._refund(request, intent)
        async with transaction(self.sessionmaker) as session:
            await PaymentRepository(session).set_refund(
                request.payment_id, refund_id, activity.info().started_time
            )
        activity.logger.info("payment refunded (%s): %s", request.reason, refund_id)
        return RefundResult(refund_id=refund_id, amount=amount)

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

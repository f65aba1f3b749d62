"""Plans and payments in Postgres. Repositories never commit: the request or activity owns the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.models import Payment, PaymentStatus, Plan


class PlanRepository:
    """Plans on sale."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_on_sale(self) -> Sequence[Plan]:
        """Non-deprecated plans, fewest images first."""
        query = (
            select(Plan).where(Plan.is_deprecated.is_(False)).order_by(Plan.feature_amount_images, Plan.id)
        )
        return (await self.session.scalars(query)).all()

    async def get(self, plan_id: int) -> Plan | None:
        """One plan by id, deprecated or not."""
        return await self.session.get(Plan, plan_id)


class PaymentRepository:
    """Payments and their checkout details."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, payment_id: uuid.UUID, *, for_update: bool = False) -> Payment | None:
        """One payment by id."""
        return await self.session.get(Payment, payment_id, with_for_update=for_update)

    async def add(self, payment: Payment) -> Payment:
        """Insert a new payment."""
        self.session.add(payment)
        await self.session.flush()
        return payment

    async def record_checkout_details(
        self,
        payment_id: uuid.UUID,
        *,
        session_id: str,
        payment_intent_id: str | None,
        amount_paid: int | None,
        email: str | None,
    ) -> None:
        """Store what Stripe told us about the checkout; a later, emptier event never erases earlier facts."""
        await self.session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(
                session_id=func.coalesce(Payment.session_id, session_id),
                payment_intent_id=func.coalesce(payment_intent_id, Payment.payment_intent_id),
                amount_paid=func.coalesce(amount_paid, Payment.amount_paid),
                email=func.coalesce(email, Payment.email),
            )
        )

    async def set_status(self, payment_id: uuid.UUID, status: PaymentStatus, at: datetime) -> None:
        """Move a payment to status; paid_at is set once and never moved by a redelivery."""
        values: dict[str, object] = {"status": status.value}
        if status is PaymentStatus.PAID:
            values["paid_at"] = func.coalesce(Payment.paid_at, at)
        if status is PaymentStatus.REFUNDED:
            values["refunded_at"] = func.coalesce(Payment.refunded_at, at)
        await self.session.execute(update(Payment).where(Payment.id == payment_id).values(**values))

    async def set_refund(self, payment_id: uuid.UUID, refund_id: str | None, at: datetime) -> None:
        """Record a refund."""
        await self.session.execute(
            update(Payment)
            .where(Payment.id == payment_id)
            .values(
                status=PaymentStatus.REFUNDED.value,
                refund_id=func.coalesce(Payment.refund_id, refund_id),
                refunded_at=func.coalesce(Payment.refunded_at, at),
            )
        )

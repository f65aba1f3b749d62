"""Callback URLs and sealed secrets of payments, and the delivery state of events. Repositories never commit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.contracts.notices import CallbackState
from ecomdream.models import CustomerEventRow, Payment

# Errors are kept short: they are read by operators and may be shown to the customer's developers.
ERROR_LENGTH = 500


class Callback(NamedTuple):
    """Where a payment's events go and the sealed secret they are signed with."""

    url: str | None
    sealed_secret: str | None


class CallbackRepository:
    """The callback columns of `payments` and `customer_events`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_payment(self, payment_id: uuid.UUID) -> Callback | None:
        """The payment's callback URL and sealed secret (None: no such payment)."""
        row = (
            await self.session.execute(
                select(Payment.callback_url, Payment.webhook_secret).where(Payment.id == payment_id)
            )
        ).one_or_none()
        return None if row is None else Callback(row[0], row[1])

    async def set_url(self, payment_id: uuid.UUID, url: str | None) -> None:
        """Send the payment's events to url from now on (None: to nobody)."""
        await self.session.execute(update(Payment).where(Payment.id == payment_id).values(callback_url=url))

    async def set_secret(self, payment_id: uuid.UUID, sealed: str) -> None:
        """Sign the payment's events with this (sealed) secret from now on."""
        await self.session.execute(
            update(Payment).where(Payment.id == payment_id).values(webhook_secret=sealed)
        )

    async def state(self, event_id: str) -> CustomerEventRow | None:
        """An event's row."""
        return await self.session.scalar(
            select(CustomerEventRow).where(CustomerEventRow.event_id == event_id)
        )

    async def attempted(
        self, event_id: str, state: CallbackState, error: str | None, at: datetime | None = None
    ) -> int:
        """Count one attempt and its outcome; returns the attempts made so far."""
        values: dict[str, object] = {
            "callback_attempts": CustomerEventRow.callback_attempts + 1,
            "callback_state": state.value,
        }
        if error is not None:
            values["callback_last_error"] = error[:ERROR_LENGTH]
        if state is CallbackState.DELIVERED:
            # The last error stays: "delivered at the 3rd attempt, after HTTP 503" is what operators ask.
            values["callback_delivered_at"] = at
        attempts = await self.session.scalar(
            update(CustomerEventRow)
            .where(CustomerEventRow.event_id == event_id)
            .values(**values)
            .returning(CustomerEventRow.callback_attempts)
        )
        return int(attempts or 0)

    async def give_up(self, event_id: str, error: str | None = None) -> None:
        """No more attempts (the last error stays, unless a new reason is given)."""
        values: dict[str, object] = {"callback_state": CallbackState.GAVE_UP.value}
        if error is not None:
            values["callback_last_error"] = error[:ERROR_LENGTH]
        await self.session.execute(
            update(CustomerEventRow)
            .where(
                CustomerEventRow.event_id == event_id,
                CustomerEventRow.callback_state != CallbackState.DELIVERED.value,
            )
            .values(**values)
        )

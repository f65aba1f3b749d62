"""The customer-event outbox and deletion receipts in Postgres. Repositories never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from ecomdream.contracts.events import CustomerEvent
from ecomdream.models import CustomerEventRow, Deletion, EmailState

# `NOTIFY` channel told the version id each time one of its events is written (the live stream listens).
EVENTS_CHANNEL = "customer_events"


class EventRepository:
    """Events in the order they were written: written once per event id, read by version after a `seq`."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(
        self, event: CustomerEvent, *, callback_state: str | None, email_state: str | None
    ) -> CustomerEventRow:
        """Write the event once (a retry finds the first row) and wake the version's live streams."""
        await self.session.execute(
            insert(CustomerEventRow)
            .values(
                event_id=event.event_id,
                payment_id=event.payment_id,
                version_id=event.version_id,
                type=event.type.value,
                data=event.data,
                occurred_at=event.occurred_at,
                callback_state=callback_state,
                email_state=email_state,
            )
            .on_conflict_do_nothing(index_elements=[CustomerEventRow.event_id])
        )
        row = await self.get(event.event_id)
        assert row is not None, "the event was just written"
        if event.version_id is not None:
            await self.session.execute(select(func.pg_notify(EVENTS_CHANNEL, str(event.version_id))))
        return row

    async def get(self, event_id: str) -> CustomerEventRow | None:
        """One event by id."""
        return await self.session.scalar(
            select(CustomerEventRow).where(CustomerEventRow.event_id == event_id)
        )

    async def of_version(
        self, version_id: uuid.UUID, after_seq: int = 0, limit: int = 100
    ) -> Sequence[CustomerEventRow]:
        """The version's events written after `after_seq`, oldest first."""
        query = (
            select(CustomerEventRow)
            .where(CustomerEventRow.version_id == version_id, CustomerEventRow.seq > after_seq)
            .order_by(CustomerEventRow.seq)
            .limit(limit)
        )
        return (await self.session.scalars(query)).all()

    async def set_email_state(
        self, event_id: str, state: EmailState, sent_at: datetime | None = None
    ) -> None:
        """Record how the event's e-mail went; once sent, it stays sent."""
        await self.session.execute(
            update(CustomerEventRow)
            .where(
                CustomerEventRow.event_id == event_id,
                CustomerEventRow.email_state.is_distinct_from(EmailState.SENT.value),
            )
            .values(email_state=state.value, email_sent_at=sent_at)
        )


class DeletionRepository:
    """Deletion receipts: one per version."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_version(self, version_id: uuid.UUID) -> Deletion | None:
        """The version's receipt, if its deletion was asked for."""
        return await self.session.scalar(select(Deletion).where(Deletion.version_id == version_id))

    async def get(self, receipt_id: uuid.UUID) -> Deletion | None:
        """One receipt by id."""
        return await self.session.get(Deletion, receipt_id)

"""The customer-event outbox and deletion receipts in Postgres. Repositories never commit."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, func, select, update
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

    async def delete_of_version(self, version_id: uuid.UUID, keep: Sequence[str] = ()) -> int:
        """Delete the version's events (they may name its prompts), except those of the `keep` types."""
        result = await self.session.execute(
            delete(CustomerEventRow).where(
                CustomerEventRow.version_id == version_id, CustomerEventRow.type.not_in(keep)
            )
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

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

    async def open(
        self, receipt_id: uuid.UUID, version_id: uuid.UUID, payment_id: uuid.UUID, requested_at: datetime
    ) -> Deletion:
        """The version's receipt: written once; a second call (any receipt id) finds the first."""
        await self.session.execute(
            insert(Deletion)
            .values(
                receipt_id=receipt_id, version_id=version_id, payment_id=payment_id, requested_at=requested_at
            )
            .on_conflict_do_nothing(index_elements=[Deletion.version_id])
        )
        receipt = await self.of_version(version_id)
        assert receipt is not None, "the receipt was just written"
        return receipt

    async def add(self, receipt_id: uuid.UUID, counts: Mapping[str, int]) -> None:
        """Add what a step deleted to the receipt's counts (in the step's own transaction)."""
        receipt = await self.session.get(Deletion, receipt_id, with_for_update=True)
        assert receipt is not None, "a deletion step runs after its receipt was written"
        merged = dict(receipt.deleted)
        for kind, count in counts.items():
            merged[kind] = int(str(merged.get(kind, 0))) + count
        receipt.deleted = merged

    async def finish(self, receipt_id: uuid.UUID, at: datetime) -> None:
        """Everything is deleted: the receipt says so, and when (set once)."""
        await self.session.execute(
            update(Deletion)
            .where(Deletion.receipt_id == receipt_id)
            .values(state="done", completed_at=func.coalesce(Deletion.completed_at, at))
        )

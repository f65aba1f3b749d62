"""The customer-event outbox and deletion receipts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ecomdream.db.base import Base, CreatedAtMixin


class EmailState(StrEnum):
    """How the e-mail about one event went (`customer_events.email_state`; NULL: the type is not mailed)."""

    PENDING = "pending"
    SENT = "sent"
    # The last attempt failed and is retried (the server was down or deferred it).
    FAILING = "failing"
    # The mail server refused the address for good: no message will be sent.
    GAVE_UP = "gave_up"
    # Stripe collected no e-mail address for the payment.
    NO_ADDRESS = "no_address"


class CustomerEventRow(CreatedAtMixin, Base):
    """One customer event (see `ecomdream.contracts.events`) and how its deliveries went.

    `seq` orders a version's events for the live stream (its `id:` and `Last-Event-ID`); the delivery columns
    are what operators read when a customer asks where a callback or e-mail went.
    """

    __tablename__ = "customer_events"
    __table_args__ = (
        CheckConstraint(
            "callback_state IS NULL OR callback_state IN ('pending', 'delivered', 'failing', 'gave_up')",
            name="callback_state_known",
        ),
        CheckConstraint(
            "email_state IS NULL OR email_state IN ('pending', 'sent', 'failing', 'gave_up', 'no_address')",
            name="email_state_known",
        ),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), nullable=False, index=True)
    version_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    data: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # NULL: no callback URL when the event happened.
    callback_state: Mapped[str | None] = mapped_column(String(16))
    callback_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    callback_last_error: Mapped[str | None] = mapped_column(Text)
    callback_delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # NULL: the event is not one customers are mailed about.
    email_state: Mapped[str | None] = mapped_column(String(16))
    email_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Deletion(CreatedAtMixin, Base):
    """A customer's deletion of a model: the receipt they can read back (what went, and when)."""

    __tablename__ = "deletions"
    __table_args__ = (CheckConstraint("state IN ('running', 'done')", name="state_known"),)

    receipt_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # No foreign key: the receipt outlives what it describes.
    version_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, unique=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False, index=True)
    state: Mapped[str] = mapped_column(String(8), nullable=False, server_default="running")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What was deleted: counts per kind ({"photos": 12, "images": 8, ...}) and the provider's answers.
    deleted: Mapped[dict[str, object]] = mapped_column(JSONB, nullable=False, server_default="{}")

"""Plans on sale and the payments made for them."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ecomdream.db.base import Base, CreatedAtMixin


class PaymentStatus(StrEnum):
    """Where a payment is in its life."""

    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class Plan(CreatedAtMixin, Base):
    """A purchasable plan: an initial training plan or an add-on pack of images."""

    __tablename__ = "plans"
    __table_args__ = (
        CheckConstraint("price >= 0", name="price_not_negative"),
        CheckConstraint("feature_amount_images > 0", name="images_positive"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    is_init: Mapped[bool] = mapped_column(Boolean, nullable=False)
    price: Mapped[int] = mapped_column(Integer, nullable=False)
    currency: Mapped[str] = mapped_column(String(3), nullable=False, server_default="usd")
    plan_name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    plan_description: Mapped[str] = mapped_column(String(500), nullable=False)
    feature_amount_images: Mapped[int] = mapped_column(Integer, nullable=False)
    is_deprecated: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")


class Payment(CreatedAtMixin, Base):
    """One checkout: recorded before the customer can pay, so no money arrives for an unknown payment."""

    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'paid', 'expired', 'failed', 'refunded')", name="status_known"
        ),
        CheckConstraint("amount_total >= 0", name="amount_total_not_negative"),
        CheckConstraint("amount_paid IS NULL OR amount_paid >= 0", name="amount_paid_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"), nullable=False, index=True)
    # For add-ons the version the pack is for; for initial plans the version trained with it.
    version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("versions.id", use_alter=True), nullable=True, index=True
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=PaymentStatus.PENDING)
    amount_total: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3), nullable=False)
    promocode_id: Mapped[str | None] = mapped_column(String(255))
    session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    checkout_url: Mapped[str | None] = mapped_column(String(2048))
    payment_intent_id: Mapped[str | None] = mapped_column(String(255), index=True)
    email: Mapped[str | None] = mapped_column(String(320))
    refund_id: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    refunded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # SHA-256 of the customer's access token (initial payments; add-ons are covered by their model's).
    access_token_hash: Mapped[str | None] = mapped_column(String(64))
    # Where the API client wants signed events (initial payments), and the signing secret, sealed at rest.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_secret: Mapped[str | None] = mapped_column(Text)


class QuotaGrant(CreatedAtMixin, Base):
    """An operator's grant of extra images: the audit trail of every quota change made by hand."""

    __tablename__ = "quota_grants"
    __table_args__ = (CheckConstraint("images > 0", name="images_positive"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), nullable=False, index=True)
    version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("versions.id"), index=True)
    images: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str] = mapped_column(String(200), nullable=False)

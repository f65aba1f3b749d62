"""Who may read or change a customer's things: share links and the idempotency ledger of paid writes.

The owner's access token lives on the initial payment (`payments.access_token_hash`); only SHA-256 digests of
tokens are stored. Tokens are 256-bit random, so a plain digest cannot be reversed or guessed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, Uuid
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from ecomdream.db.base import Base, CreatedAtMixin


class Share(CreatedAtMixin, Base):
    """A read-only link to one model's gallery, revocable by the owner."""

    __tablename__ = "shares"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("versions.id"), nullable=False, index=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    label: Mapped[str | None] = mapped_column(String(100))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IdempotentRequest(CreatedAtMixin, Base):
    """The first answer to a paid write sent with an `Idempotency-Key`, replayed to its retries."""

    __tablename__ = "idempotent_requests"
    __table_args__ = (CheckConstraint("state IN ('running', 'done')", name="state_known"),)

    # Whose key it is: the digest of the caller's token (or of its address, for checkout creation).
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(8), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[dict[str, object] | None] = mapped_column(JSONB)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, index=True)

"""A customer's trained (or training) model."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, Double, ForeignKey, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ecomdream.db.base import Base, CreatedAtMixin


class VersionStatus(StrEnum):
    """Where a model is in its life."""

    VALIDATING = "validating"
    TRAINING = "training"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"


class Version(CreatedAtMixin, Base):
    """One fine-tuned model, created by one initial payment."""

    __tablename__ = "versions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('validating', 'training', 'ready', 'failed', 'deleted')", name="status_known"
        ),
        CheckConstraint("progress IS NULL OR (progress >= 0 AND progress <= 1)", name="progress_range"),
        CheckConstraint("images_quota >= 0", name="quota_not_negative"),
        CheckConstraint("images_generated >= 0", name="generated_not_negative"),
        CheckConstraint("images_count IS NULL OR images_count BETWEEN 5 AND 30", name="images_count_range"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), nullable=False, unique=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=VersionStatus.VALIDATING)
    class_name: Mapped[str] = mapped_column(String(40), nullable=False)
    trigger_token: Mapped[str] = mapped_column(String(32), nullable=False)
    images_count: Mapped[int | None] = mapped_column(Integer)
    training_zip_key: Mapped[str | None] = mapped_column(String(1024))
    training_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    model_version: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    images_quota: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    images_generated: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    training_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

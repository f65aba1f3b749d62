"""Prompts sent to a model and the images they produced."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ecomdream.db.base import Base, CreatedAtMixin


class PromptStatus(StrEnum):
    """Where a prompt is in its life."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Prompt(CreatedAtMixin, Base):
    """One generation request against a ready model."""

    __tablename__ = "prompts"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status_known"),
        CheckConstraint("amount_images IN (1, 4)", name="amount_images_allowed"),
        CheckConstraint("char_length(prompt_text) BETWEEN 1 AND 1000", name="prompt_length"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
        Index("ix_prompts_version_id_created_at", "version_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("versions.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default=PromptStatus.RUNNING)
    prompt_text: Mapped[str] = mapped_column(Text, nullable=False)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    amount_images: Mapped[int] = mapped_column(Integer, nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    guidance_scale: Mapped[float | None] = mapped_column(Double)
    num_inference_steps: Mapped[int | None] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(BigInteger)
    prediction_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    predict_time: Mapped[float | None] = mapped_column(Double)
    error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Image(CreatedAtMixin, Base):
    """One generated image, copied into our bucket."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("prompt_id", "position", name="uq_images_prompt_id_position"),
        CheckConstraint("width > 0 AND height > 0", name="size_positive"),
        CheckConstraint("position >= 0", name="position_not_negative"),
        # The retention run's question: which live images are older than the setting.
        Index("ix_images_created_at_live", "created_at", postgresql_where=text("expired_at IS NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    prompt_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prompts.id"), nullable=False, index=True)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    s3_key: Mapped[str] = mapped_column(String(1024), nullable=False, unique=True)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    # Set when retention deleted the object: the row stays (the prompt made it), its URL is never offered.
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
